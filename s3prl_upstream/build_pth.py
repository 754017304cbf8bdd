"""setuptools build step: ships ``streaming_ssl_s3prl.pth`` at the top of the wheel (site-packages).

Named in pyproject.toml (``[tool.setuptools.cmdclass] build_py``); setuptools loads this file by path at
build time, so it imports nothing but setuptools. Editable installs (``pip install -e``) build no real
wheel content; there ``streaming-ssl-s3prl install-hook`` writes the same file.
"""

from pathlib import Path

from setuptools.command.build_py import build_py

PTH_FILE = Path(__file__).with_name("streaming_ssl_s3prl.pth")


class BuildPyWithS3prlHook(build_py):
    """build_py that also copies the .pth file to the root of ``build_lib`` (-> site-packages)."""

    def run(self):
        super().run()
        if not self.editable_mode:
            self.copy_file(str(PTH_FILE), str(Path(self.build_lib) / PTH_FILE.name))

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return [*outputs, str(Path(self.build_lib) / PTH_FILE.name)]
