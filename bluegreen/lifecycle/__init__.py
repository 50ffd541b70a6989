"""The blue/green lifecycle: state file, lock, snapshot, fingerprint, node detection, swap and the commands.

`command.py` holds the plain functions behind `upgrade stage|verify|promote|rollback|status|abort`."""
