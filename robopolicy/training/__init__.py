"""The one trainer for every policy: loop, EMA, checkpoint io, distributed helpers."""
