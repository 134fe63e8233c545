"""The package's layers import one way: ops -> nn -> models (and io) -> train, data, infer, convert, metrics,
official -> cli. No module imports from a layer above its own."""

import ast
from pathlib import Path

import alae_fast

ROOT = Path(alae_fast.__file__).parent
LAYERS = {"ops": 0, "nn": 1, "models": 2, "io": 2, "data": 3, "train": 3, "infer": 3, "convert": 3, "metrics": 3,
          "official": 3, "cli": 4, "info": 4}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if parts[0] == "alae_fast" and len(parts) > 1 else None


def _imports(path: Path, module: str):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: len(module.split(".")) - node.level]
                yield ".".join(base + ([node.module] if node.module else []))
            elif node.module:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_no_module_imports_from_a_higher_layer():
    violations = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        own = _layer(module)
        if own is None:
            continue
        for imported in _imports(path, module if rel.name != "__init__" else module + ".__init__"):
            theirs = _layer(imported)
            if theirs is not None and theirs > own:
                violations.append(f"{module} (layer {own}) imports {imported} (layer {theirs})")
    assert not violations, "\n".join(violations)
