"""``cloacina graph MODULE:WORKFLOW``: print a workflow's task graph as Mermaid or Graphviz DOT."""

from __future__ import annotations

import argparse

from cloacina.cli.common import EXIT_OK, workflow_target
from cloacina.cli.loading import load_workflow


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser(
        "graph", parents=[workflow_target()], help="print a workflow's task graph (Mermaid or DOT)",
        description="Import MODULE and print the task graph of its Workflow named WORKFLOW, as a "
                    "Mermaid flowchart (default) or in Graphviz DOT. Touches no database.")
    parser.add_argument("--format", choices=("mermaid", "dot"), default="mermaid",
                        help="output format (default mermaid)")
    parser.set_defaults(handler=_graph)


def _graph(args: argparse.Namespace) -> int:
    workflow = load_workflow(args.target)
    text = workflow.to_dot() if args.format == "dot" else workflow.to_mermaid()
    print(text.rstrip("\n"))
    return EXIT_OK
