"""torch is imported only when a torch model is trained: not by `import prodml`, the CLI or the server."""

import subprocess
import sys


def test_prodml_the_server_and_the_training_entry_do_not_import_torch() -> None:
    code = (
        "import sys, prodml, prodml.cli.main, prodml.serve.server, prodml.pipeline.train, prodml.dl, "
        "prodml.dl.params, prodml.export.torch; print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "False"
