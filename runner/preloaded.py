"""Importing this module preloads what an instance needs (`runner.imports.preload`): the module
a multiprocessing fork server is told to preload."""

from runner.imports import preload

preload()
