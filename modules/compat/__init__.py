"""A1111 compatibility for extensions: A1111's module names (``modules.scripts``, ``modules.shared``,
``modules.processing`` ...) as thin adapters over Easel's explicit objects, for extension code only.

This is the one package where A1111's module style (module-level ``shared.opts`` and friends) is allowed; nothing
in Easel's own code imports it (tests/test_architecture.py checks). Extension files are executed with an import
function that maps A1111's names to ``modules.compat.a1111.*`` (``modules.compat.importer``), so Easel's own
``modules.processing`` and ``modules.scripts`` packages are never replaced."""
