"""Model Explorer as the graph view: the workbench's per-node results as overlays.

Google's Model Explorer (``ai-edge-model-explorer``, with the ``model-explorer-onnx``
adapter) lays out large graphs in layers, collapses them by namespace and colours nodes
by "node data": JSON files that map a node to a value and a colour. This module writes
three overlays for a divergence run (per-layer SQNR, first-divergence verdict, operator
support) and serves Model Explorer on 127.0.0.1 for the notebook.

Node data is keyed by node id. The ONNX adapter uses the ONNX node name as the node id
(unnamed nodes become ``<node_i>``), and it does not give the ``tensor_name`` output key
that Model Explorer could match a tensor name with; so every value here is keyed by the
name of the node that produces the tensor, as in the prepared :class:`OnnxModel`.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import quote

import onnx

from workbench.compare.metrics import SQNR_OK_DB
from workbench.errors import WorkbenchError
from workbench.model import OnnxModel
from workbench.support.static import static_check

#: The ONNX adapter: the module Model Explorer loads (``--extensions``) and its adapter id.
EXTENSION = "model_explorer_onnx"
ADAPTER_ID = "onnx_adapter"
#: Overlay names, in the order they are written and shown.
OVERLAYS = ("sqnr", "verdict", "support")
#: SQNR colour scale (dB, colour): red at 0 dB, yellow at the 20 dB rule, green from 40 dB.
#: Fixed, not relative to the run's min/max, so the same colour means the same error everywhere.
SQNR_STOPS = ((0.0, (0xD6, 0x27, 0x28)), (SQNR_OK_DB, (0xFF, 0xD7, 0x00)), (40.0, (0x2C, 0xA0, 0x2C)))
VERDICT_COLOURS = {"origin": "#d62728", "inherited": "#ff7f0e", "ok": "#2ca02c", "fused": "#d0d0d0"}
SUPPORT_COLOURS = {"npu": "#2ca02c", "cpu": "#ff7f0e", "attention": "#bcbd22", "rejected": "#d62728"}
# Worst first: a node with several compared outputs shows its worst one.
_VERDICT_RANK = {"origin": 0, "inherited": 1, "ok": 2, "fused": 3}


# ---------------------------------------------------------------------------- node data
def node_data(result, model: OnnxModel | None = None, *, threshold_db: float = SQNR_OK_DB) -> dict[str, dict]:
    """The run's per-node overlays as Model Explorer node-data JSON (``GraphNodeData``).

    Args:
        result: a :class:`~workbench.compare.divergence.Divergence`.
        model: the OnnxModel the run was made from; by default loaded again from the path
            and input shapes recorded in ``result.meta["model"]``.
        threshold_db: the SQNR rule of :meth:`Divergence.first_divergence`.

    Returns:
        ``{"sqnr": ..., "verdict": ..., "support": ...}``, each
        ``{"name": ..., "results": {node name: {"value": ..., "bgColor": ...}}}``:

        - sqnr: the worst mean SQNR (dB, rounded to 0.01) of the node's compared outputs,
          coloured on the fixed :data:`SQNR_STOPS` scale;
        - verdict: "origin", "inherited" or "ok" from ``first_divergence``, and "fused"
          for nodes whose outputs have no tensor of their own in the compiled model;
        - support: the static check's "npu", "cpu", "attention" or "rejected" for the
          run's target platform.

    Raises:
        WorkbenchError: no model given and the run records no model file to load.
    """
    model = model or _model_of(result)
    producer = {t.name: t.producer for t in model.tensors if t.producer}
    sqnr: dict[str, float] = {}
    for row in result.summary().itertuples():
        node = producer.get(row.layer)
        if node is not None and row.sqnr_db_mean == row.sqnr_db_mean:  # skip NaN
            sqnr[node] = min(sqnr.get(node, float("inf")), float(row.sqnr_db_mean))
    verdict: dict[str, str] = {}
    table = result.table
    for layer in table.loc[(table.backend == "simulator") & (table.status == "fused"), "layer"].unique():
        if layer in producer:
            verdict[producer[layer]] = "fused"
    for row in result.first_divergence(threshold_db=threshold_db).itertuples():
        node = producer.get(row.layer)
        if node is not None and _VERDICT_RANK[row.verdict] < _VERDICT_RANK.get(verdict.get(node), 9):
            verdict[node] = row.verdict
    return {
        "sqnr": _overlay(
            "SQNR (dB)", {n: {"value": round(v, 2), "bgColor": sqnr_colour(v)} for n, v in sqnr.items()}
        ),
        "verdict": _categorical("first divergence", verdict, VERDICT_COLOURS),
        "support": _categorical(f"support ({_platform(result)})", _support(model, result), SUPPORT_COLOURS),
    }


def sqnr_colour(db: float) -> str:
    """The colour of an SQNR value on :data:`SQNR_STOPS` (linear between stops, clamped)."""
    (lo, c_lo), *rest = SQNR_STOPS
    if db <= lo:
        return _hex(c_lo)
    for hi, c_hi in rest:
        if db <= hi:
            f = (db - lo) / (hi - lo)
            return _hex(tuple(round(a + (b - a) * f) for a, b in zip(c_lo, c_hi)))
        lo, c_lo = hi, c_hi
    return _hex(c_lo)


def write_node_data(result, folder: str | Path, model: OnnxModel | None = None) -> list[Path]:
    """Write the overlays of :func:`node_data` into ``folder`` (e.g. the run folder).

    Writes ``node_data_sqnr.json``, ``node_data_verdict.json`` and ``node_data_support.json``.
    The node ids are those of the prepared model; when the model file itself would give
    Model Explorer other ids (it has unnamed nodes, or there is no file), the prepared
    model is written too, as ``model.onnx``, and is the file to open (see
    :func:`model_file`). A standalone Model Explorer
    (``pip install ai-edge-model-explorer model-explorer-onnx``) then shows them
    (``standalone_command(model, paths)`` writes this line for a run)::

        model-explorer MODEL.onnx --extensions=model_explorer_onnx --no_open_in_browser \\
            --node_data_paths=RUN/node_data_support.json,RUN/node_data_verdict.json,RUN/node_data_sqnr.json

    and prints the URL to open (``--host``/``--port`` choose the address). It shows the
    overlay it loads last (here SQNR); the others are switched on in the side panel. (The
    standalone app asks PyPI for a newer version when it starts; :func:`explorer_view`'s
    server does not.)

    Returns:
        the three JSON files.
    """
    model = model or _model_of(result)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in node_data(result, model).items():
        path = folder / f"node_data_{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
        paths.append(path)
    if model_file(model) is None:
        model.save(folder / "model.onnx")
    return paths


def standalone_command(model: str | Path | OnnxModel, node_data_paths: Sequence[str | Path]) -> str:
    """The shell command that opens the model with the overlays in a standalone Model Explorer
    (the first overlay is the one shown).

    ``model`` is the .onnx file, or the OnnxModel (its file, or the prepared ``model.onnx``
    that :func:`write_node_data` put beside the node data).
    """

    path = _served_file(model, node_data_paths)
    paths = ",".join(str(Path(p).resolve()) for p in _shown_first(node_data_paths))
    return (
        f"model-explorer {shlex.quote(str(path.resolve()))} --extensions={EXTENSION} "
        f"--no_open_in_browser --node_data_paths={shlex.quote(paths)}"
    )


def _served_file(model: str | Path | OnnxModel, node_data_paths: Sequence[str | Path]) -> Path:
    """The file whose node ids match the node data: the model's own, the prepared copy
    beside the node data, or a new prepared copy."""
    if not isinstance(model, OnnxModel):
        return Path(model)
    beside = [Path(p).parent / "model.onnx" for p in node_data_paths]
    return (
        model_file(model)
        or next((p for p in beside if p.is_file()), None)
        or model.save(Path(tempfile.mkdtemp(prefix="rknn-wb-model-explorer-")) / f"{model.name}.onnx")
    )


def model_file(model: OnnxModel) -> Path | None:
    """The model's own file when Model Explorer gives its nodes the prepared model's names
    (every node named, the same names); None when the prepared model must be saved."""
    if model.path is None or not Path(model.path).is_file():
        return None

    names = [n.name for n in onnx.load(str(model.path), load_external_data=False).graph.node]
    same = all(names) and sorted(names) == sorted(n.name for n in model.proto.graph.node)
    return Path(model.path) if same else None


def _overlay(name: str, results: dict[str, dict]) -> dict:
    # GraphNodeData form ("results" at the top): Model Explorer applies it to the graph on
    # screen, whatever the adapter named that graph. No showExpandedSummaryOnGroupNode: it
    # makes the web app lay the graph out again when the data arrives, which drops the
    # node selected by the URL (seen with 0.1.34 on yolov8n).
    return {"name": name, "results": results}


def _categorical(name: str, values: dict[str, str], colours: dict[str, str]) -> dict:
    return _overlay(name, {n: {"value": v, "bgColor": colours.get(v, "#1f77b4")} for n, v in values.items()})


def _hex(rgb) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb)


def _platform(result) -> str:
    return result.meta.get("config", {}).get("target_platform") or result.meta.get("support", {}).get(
        "platform", "rk3588"
    )


def _support(model: OnnxModel, result) -> dict[str, str]:

    report = static_check(model, _platform(result))
    return dict(zip(report.nodes.node, report.nodes.status))


def _model_of(result) -> OnnxModel:
    info = result.meta.get("model", {})
    path = info.get("path")
    if not path or not Path(path).is_file():
        raise WorkbenchError(
            f"The run does not say where its model is (meta['model']['path'] = {path!r}): pass the "
            "OnnxModel the run was made from, e.g. node_data(result, model)."
        )
    return OnnxModel.load(path, info.get("inputs") or None)


# ---------------------------------------------------------------------------- server
class _Server:
    """One Model Explorer server (a child process) per Python process, on 127.0.0.1.

    A child process, not a thread: Model Explorer's ``server.start`` blocks forever and has
    no stop; a process can be stopped, and the adapter's conversion of a large model does
    not hold the kernel. The child exits when this process dies (it watches its parent).
    """

    process: subprocess.Popen | None = None
    port: int | None = None
    log: Path | None = None
    lock = threading.Lock()


def start_server(port: int | None = None, timeout: float = 60.0) -> int:
    """Start Model Explorer on 127.0.0.1 (or reuse the running one) and return its port.

    Args:
        port: the port to listen on; a free one by default. A running server on another
            port is stopped first.
        timeout: seconds to wait for it to answer.

    Raises:
        WorkbenchError: the server exited or did not answer within ``timeout`` (its log is quoted).
    """
    with _Server.lock:
        running = _Server.process is not None and _Server.process.poll() is None
        if running and port in (None, _Server.port):
            return _Server.port
        _stop_locked()
        port = port or _free_port()
        log = Path(tempfile.mkdtemp(prefix="rknn-wb-model-explorer-")) / "server.log"
        paths = [_package_root(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
        with open(log, "w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(port), str(os.getpid())],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a Ctrl+C meant for the caller does not kill the view
            )
        _Server.process, _Server.port, _Server.log = process, port, log
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                _stop_locked()
                raise WorkbenchError(
                    f"Model Explorer exited with code {process.returncode} on port {port}: "
                    f"{log.read_text()[-1500:]}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/check_health", timeout=2) as r:
                    if r.read() == b"model_explorer_ok":
                        return port
            except OSError:
                time.sleep(0.2)
        _stop_locked()
        raise WorkbenchError(
            f"Model Explorer did not answer on 127.0.0.1:{port} within {timeout:.0f} s; its log "
            f"({log}): {log.read_text()[-1500:]}"
        )


def stop_server() -> None:
    """Stop the Model Explorer server this process started (nothing if none is running)."""
    with _Server.lock:
        _stop_locked()


def _stop_locked() -> None:
    process, _Server.process, _Server.port = _Server.process, None, None
    if process is None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


atexit.register(stop_server)


def explorer_url(
    model_path: str | Path,
    node_data_paths: Sequence[str | Path] = (),
    *,
    port: int,
    base_url: str | None = None,
    select: str | None = None,
    expand_all: bool = False,
) -> str:
    """The URL that opens ``model_path`` with the overlays in the server on ``port``.

    ``base_url`` (Jupyter's, e.g. ``/user/me/``) sends it through jupyter-server-proxy
    (``<base_url>proxy/<port>/``); None gives ``http://127.0.0.1:<port>/``. The ``data``
    parameter is what ``ModelExplorerConfig.to_url_param_value`` encodes (file paths on
    the server's machine; the node data applies to the first model), plus the web app's
    ``uiState`` when a node is selected (``select``, a node name: the view zooms to it and
    the side panel shows it) or every layer is expanded (``expand_all``).
    """
    paths = [str(Path(p).resolve()) for p in _shown_first(node_data_paths)]
    data: dict = {"models": [{"url": str(Path(model_path).resolve()), "adapterId": ADAPTER_ID}]}
    if paths:
        data["nodeData"] = paths
        data["nodeDataTargets"] = [""] * len(paths)
    if select or expand_all:
        pane = {
            "deepestExpandedGroupNodeIds": ["___all___"] if expand_all else [],
            "selectedNodeId": select or "",
            "selectedGraphId": "",
            "selectedCollectionLabel": "",
            "widthFraction": 1,
        }
        data["uiState"] = {"paneStates": [pane]}
    root = f"{base_url.rstrip('/')}/proxy/{port}/" if base_url is not None else f"http://127.0.0.1:{port}/"
    return f"{root}?data={quote(json.dumps(data))}"


def _shown_first(node_data_paths: Sequence[str | Path]) -> list[str | Path]:
    # Model Explorer shows the overlay it loaded last: load the first one last.
    return list(node_data_paths)[::-1]


def explorer_view(
    model_path: str | Path | OnnxModel,
    node_data_paths: Sequence[str | Path] = (),
    *,
    port: int | None = None,
    base_url: str | None = None,
    select: str | None = None,
    expand_all: bool = False,
    height: int = 700,
):
    """Show ``model_path`` in Model Explorer with the overlays, as an IFrame in the notebook.

    Starts (or reuses) this process's Model Explorer server on 127.0.0.1; it stops when
    the process (the kernel) exits, or with :func:`stop_server`.

    Args:
        model_path: the .onnx file, or an OnnxModel: then its file, or its prepared copy
            (beside the node data, from :func:`write_node_data`, or a new one), so the node
            ids match :func:`node_data`.
        node_data_paths: node-data JSON files, e.g. from :func:`write_node_data`; the
            first is the one shown, the others are a click away in the side panel.
        port: the server's port (a free one by default).
        base_url: Jupyter's base URL: the frame then goes through jupyter-server-proxy
            (``<base_url>proxy/<port>/``), which works with a remote Lab. By default that
            happens inside a Jupyter kernel when jupyter-server-proxy is installed, with
            base URL ``$JUPYTERHUB_SERVICE_PREFIX`` or ``/``; elsewhere the frame points at
            ``http://127.0.0.1:<port>/``.
        select: a node name to select: the view zooms to it, its layers open and the side
            panel shows its values in every overlay.
        expand_all: open every layer (namespace) of the graph; for small graphs (a
            1000-node model fits the frame as an unreadable line: select a node instead).
        height: frame height in pixels.

    Returns:
        an ``IPython.display.IFrame``; its ``.src`` is the URL.
    """
    from IPython.display import IFrame

    model_path = _served_file(model_path, node_data_paths)
    bound = start_server(port)
    if base_url is None and _in_jupyter():
        base_url = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/")
    url = explorer_url(
        model_path, node_data_paths, port=bound, base_url=base_url, select=select, expand_all=expand_all
    )
    return IFrame(url, "100%", height)


def _in_jupyter() -> bool:

    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return bool(shell) and hasattr(shell, "kernel") and find_spec("jupyter_server_proxy") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _package_root() -> str:
    import workbench

    return str(Path(workbench.__file__).resolve().parents[1])


# ---------------------------------------------------------------------------- the child
# Model Explorer's web app asks for "/api/...", "/static_files/..." from the site root and
# sets <base href="/">: behind jupyter-server-proxy (/proxy/<port>/) those would miss the
# server. Served with relative paths, the same app works at any prefix.
_RELATIVE = [
    ('<base href="/">', '<base href="./">'),
    ('"/api/v1/', '"api/v1/'),
    ('"/apipost/v1/', '"apipost/v1/'),
    ('"/apistream/', '"apistream/'),
    ("/static_files/", "static_files/"),
]


def _web_asset(rel_path: str):
    """Model Explorer's static files, with root paths made relative and the Google Fonts
    block dropped (the same fonts ship in static_files/): the page makes no Internet calls."""

    import flask
    from model_explorer import server

    if ".." in rel_path or not (rel_path == "index.html" or rel_path.endswith((".js", ".css"))):
        return _ORIGINAL_ASSET(rel_path)
    path = Path(server.OSS_WEB_APP_DIR) / rel_path
    if not path.is_file():
        flask.abort(404)
    text = path.read_text(encoding="utf-8")
    for old, new in _RELATIVE:
        text = text.replace(old, new)
    if rel_path == "index.html":
        text = re.sub(r'<link rel="preconnect" href="https://fonts\.gstatic\.com"[^>]*>', "", text)
        text = re.sub(r"<style>[^<]*fonts\.gstatic\.com[^<]*</style>", "", text)
    kind = {"html": "text/html", "js": "text/javascript", "css": "text/css"}[rel_path.rsplit(".", 1)[1]]
    return flask.Response(text, mimetype=kind)


_ORIGINAL_ASSET = None


def _serve(port: int, parent: int) -> None:
    """The child: Model Explorer's own server, without its calls to PyPI and GitHub."""
    global _ORIGINAL_ASSET
    # Model Explorer imports torch only to show PyTorch programs; blocking it saves ~5 s.
    sys.modules.setdefault("torch", None)
    from model_explorer import server

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    # The version check asks pypi.python.org and api.github.com, at start and from the page.
    server._check_new_version = lambda print_msg=True: {
        "version": "",
        "runningVersion": "",
        "releaseUrl": "",
        "desktopAppUrl": "",
    }
    _ORIGINAL_ASSET, server._serve_static_asset = server._serve_static_asset, _web_asset
    server.start(
        host="127.0.0.1", port=port, no_open_in_browser=True, extensions=[EXTENSION], skip_health_check=True
    )


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
