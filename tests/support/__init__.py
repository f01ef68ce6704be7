"""Test helpers shared by test files: the S3 servers tests start (``servers``), mounts
(``mount``), store wrappers that count or fail requests (``stores``), an in-memory object store
(``memstore``) and the core's one factory (``core``), the fake server and the proxies
(``fakes3``, ``faultproxy``, ``loopback``), and the scripts tests run in child processes.
"""
