"""Power-loss testing: a block-level write/flush recorder (FUSE under a loop device) and a crash-image replayer."""
