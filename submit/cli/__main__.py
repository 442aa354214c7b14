from submit.cli import entrypoint

entrypoint()
