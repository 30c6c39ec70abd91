"""The sweeper: drives on orders whose submission or last step never took effect."""
