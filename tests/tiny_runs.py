"""Training overrides for a tiny U-Net diffusion policy trained 2 steps: plumbing tests, not skill."""

TWO_STEP_UNET = ["policy.settings.backbone.unet.down_dims=[16,32,64]", "policy.settings.backbone.unet.step_embed_dim=16",
                 "training.batch_size=8", "training.num_workers=0", "training.max_steps=2", "training.val_every=2",
                 "training.checkpoint_every=2", "training.val_batches=1", "training.action_error_windows=4",
                 "optim.warmup_steps=1", "logging.tensorboard=false"]
