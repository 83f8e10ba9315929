"""Tiny helper to write notebooks from (kind, source, tags) cells. Used once per chapter
when a notebook is created; afterwards the .ipynb files are edited as notebooks."""
import nbformat

from lyabook.cli import code_ref, colab_cell_source

COLAB = colab_cell_source(code_ref())  # the same cell `lyabook run` writes (it rewrites it at every run)


def write(path, cells):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    out = []
    for kind, src, *tags in cells:
        c = nbformat.v4.new_markdown_cell(src) if kind == "md" else nbformat.v4.new_code_cell(src)
        if tags:
            c.metadata["tags"] = list(tags[0])
        out.append(c)
    nb.cells = out
    nbformat.write(nb, path)
