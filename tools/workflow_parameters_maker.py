"""Make ViewComfy's flattened parameters file from a workflow (API or UI format).

Like ViewComfy's own tool: every input of every node becomes `"<id>-inputs-<name>": value` (links
included, as `["4", 0]`), preceded by `"_<id>-node-class_type-info"`: the node's `_meta.title`, else its
class_type. Keys starting with `_` are context only, so the file can be sent back as `params` as is.
UI-format files are converted first with the repo's recorded object_info (or --object-info).

    python -m tools.workflow_parameters_maker --workflow_api_path workflow_api.json \
        [--output workflow_api_parameters.json] [--object-info emulator/data/object_info.json]

The output defaults to `workflow_api_parameters.json` next to the input file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from core.errors import ComfyGateError
from workflow.format import detect_format, to_api
from workflow.params import node_sort_key

DEFAULT_OBJECT_INFO = Path(__file__).resolve().parent.parent / "emulator" / "data" / "object_info.json"


def flatten_workflow(api: dict[str, Any]) -> dict[str, Any]:
    """The flattened `{"<id>-inputs-<name>": value, "_<id>-node-class_type-info": title}` mapping."""
    flat: dict[str, Any] = {}
    for node_id in sorted(api, key=node_sort_key):
        node = api[node_id]
        title = (node.get("_meta") or {}).get("title") or node["class_type"]
        flat[f"_{node_id}-node-class_type-info"] = title
        for name, value in (node.get("inputs") or {}).items():
            flat[f"{node_id}-inputs-{name}"] = value
    return flat


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workflow_api_path",
        "--workflow-api-path",
        dest="workflow",
        required=True,
        type=Path,
        help="workflow JSON file (API format, or UI format converted first)",
    )
    parser.add_argument(
        "--output",
        "-o",
        type=Path,
        default=None,
        help="where to write (default: workflow_api_parameters.json next to the input)",
    )
    parser.add_argument(
        "--object-info",
        "--object_info",
        dest="object_info",
        type=Path,
        default=DEFAULT_OBJECT_INFO,
        help="object_info.json used to convert UI-format files",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the tool; returns the process exit code (0 ok, 2 bad input)."""
    args = _parser().parse_args(argv)
    try:
        data = json.loads(args.workflow.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read {args.workflow}: {exc}", file=sys.stderr)
        return 2
    try:
        object_info = None
        if detect_format(data) == "ui":
            object_info = json.loads(args.object_info.read_text(encoding="utf-8"))
        api = to_api(data, object_info)
    except ComfyGateError as exc:
        print(f"error: {args.workflow}: {exc.message}", file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: cannot read object_info {args.object_info}: {exc}", file=sys.stderr)
        return 2
    output = args.output or args.workflow.resolve().parent / "workflow_api_parameters.json"
    output.write_text(json.dumps(flatten_workflow(api), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(api)} nodes' inputs to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
