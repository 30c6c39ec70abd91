"""The orders read model: current order state and its audit trail."""
