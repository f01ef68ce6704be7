"""Test helpers shared by test files: an in-memory object store, the core's one factory, fakes.

New helpers go here; the older ones (``tests/servers.py``, ``tests/mount.py``,
``tests/stores.py``…) stay where they are.
"""
