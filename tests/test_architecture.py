"""The package's layering: each package imports only from the layers below it, and no module
imports itself back through others (function-level imports included)."""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "megatron_redi")

# bottom to top; a unit may import from its own layer's package and from lower layers
LAYERS = [
    {"cli"},  # the commands' shared rules: UserError (exit 2), help
    {"settings"},  # what every configuration shares: ConfigError, declared settings, file readers
    {"families"},  # one record per model family: its HF names, config keys, the block's parts
    {"model_config", "atomic", "batch", "main_grad"},
    {"config"},  # the former name of settings + model_config, kept as an alias
    {"ops"},  # kernels and their references: no communication
    {"parallel"},  # groups, the TP layout, collectives, TP layers and autograd Functions
    {"checkpoint"},
    {"model", "losses"},
    {"fixtures"},  # tiny checkpoints and tokenizers for tests and the demo
    {"data"},
    {"eval"},
    {"training"},
    {"train", "slurm"},  # the trainer's entry; what srun runs on each node of a SLURM job
    {"recipe"},  # the paper's recipes: pipelines of the tools above
    {"commands"},  # the command-line programs (tools/NAME.py runs commands.NAME)
]
RANK = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _modules():
    """module name -> the megatron_redi modules it imports (anywhere in its body)."""
    out = {}
    for dirpath, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
            module = rel.removesuffix(".__init__")
            package = module if name == "__init__.py" else module.rsplit(".", 1)[0]
            imports = set()
            for node in ast.walk(ast.parse(open(path).read())):
                if isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        parts = package.split(".")
                        base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                    if base.startswith("megatron_redi"):
                        for alias in node.names:
                            full = f"{base}.{alias.name}"
                            imports.add(full if _exists(full) else base)
                elif isinstance(node, ast.Import):
                    imports.update(a.name for a in node.names if a.name.startswith("megatron_redi"))
            out[module] = {i for i in imports if i != "megatron_redi._logprob_cuda"}
    return out


def _exists(module: str) -> bool:
    path = os.path.join(os.path.dirname(ROOT), *module.split("."))
    return os.path.exists(path + ".py") or os.path.isdir(path)


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "megatron_redi"


MODULES = _modules()


def test_every_unit_has_a_layer():
    assert {_unit(m) for m in MODULES} - {"megatron_redi"} <= set(RANK)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_from_below(module):
    if module == "megatron_redi":
        return
    mine = RANK[_unit(module)]
    above = sorted(i for i in MODULES[module] if _unit(i) != _unit(module) and RANK.get(_unit(i), -1) >= mine)
    assert not above, f"{module} imports {above}, which are not below it"


def test_no_import_cycles():
    done, path = set(), []

    def visit(m):
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m in done:
            return
        path.append(m)
        for dep in sorted(MODULES[m]):
            if dep in MODULES and dep != m:
                visit(dep)
        path.pop()
        done.add(m)

    for m in sorted(MODULES):
        visit(m)


def test_only_parallel_talks_to_torch_distributed():
    """Every collective goes through parallel/ (collectives.py, mappings.py), which put tensors on
    the group's device; the rest of the package does not import torch.distributed at all."""
    offenders = []
    for dirpath, _, files in os.walk(ROOT):
        for name in files:
            path = os.path.join(dirpath, name)
            if not name.endswith(".py") or os.path.relpath(path, ROOT).startswith("parallel" + os.sep):
                continue
            for node in ast.walk(ast.parse(open(path).read())):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [f"{node.module}.{a.name}" for a in node.names] if isinstance(node, ast.ImportFrom) and
                         node.module else [])
                if any(n == "torch.distributed" or n.startswith("torch.distributed.") for n in names):
                    offenders.append(f"{os.path.relpath(path, ROOT)}:{node.lineno}")
    assert not offenders, f"torch.distributed used outside parallel/: {offenders}"


def test_every_collective_is_called_in_collectives_py():
    """Inside parallel/ too, the collectives themselves are called in one file, which places their
    tensors (and takes CUDA tensors through host memory when ranks share a GPU over gloo)."""
    calls = {"all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_single", "all_gather_object",
             "broadcast", "broadcast_object_list", "reduce", "reduce_scatter", "reduce_scatter_tensor",
             "reduce_scatter_single", "all_to_all", "all_to_all_single", "gather", "scatter", "send", "recv", "barrier"}
    offenders = []
    for name in os.listdir(os.path.join(ROOT, "parallel")):
        if not name.endswith(".py") or name == "collectives.py":
            continue
        for node in ast.walk(ast.parse(open(os.path.join(ROOT, "parallel", name)).read())):
            if (isinstance(node, ast.Attribute) and node.attr in calls and isinstance(node.value, ast.Name)
                    and node.value.id == "dist"):
                offenders.append(f"parallel/{name}:{node.lineno} dist.{node.attr}")
    assert not offenders, f"collectives called outside parallel/collectives.py: {offenders}"


def test_ops_do_not_communicate():
    for dirpath, _, files in os.walk(os.path.join(ROOT, "ops")):
        for name in files:
            if name.endswith(".py"):
                text = open(os.path.join(dirpath, name)).read()
                assert "torch.distributed" not in text, f"ops/{name} uses torch.distributed"
