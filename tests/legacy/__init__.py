"""Frozen copies of xfer modules from older releases, loaded by
:func:`tests.helpers.old_module` to test what an older peer does with a newer
peer's messages. Each file names the commit it was copied from; they are
kept as they were (not part of the library, not imported by it)."""
