"""The processes, one folder each (``oee <name>`` runs one); a process never imports another."""
