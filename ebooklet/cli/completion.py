"""``ebooklet completion SHELL``: a completion script for bash, zsh or fish, made from the parser.

Commands and their options complete; paths complete as files. Install it once, e.g.
``ebooklet completion bash >> ~/.bash_completion``.
"""

from __future__ import annotations

import argparse

from .output import print_json
from .parser import Commands

SHELLS = ("bash", "zsh", "fish")


def register(commands: Commands) -> None:
    completion = commands.add(
        "completion", _completion, "print a shell completion script",
        "Print a completion script for SHELL, to install once. For example:\n"
        "  bash: ebooklet completion bash >> ~/.bash_completion\n"
        "  zsh:  ebooklet completion zsh > ~/.zfunc/_ebooklet  (~/.zfunc in $fpath)\n"
        "  fish: ebooklet completion fish > ~/.config/fish/completions/ebooklet.fish",
        remote=False,
    )
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")


def _commands(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """Every command of ``ebooklet``'s whole ``parser``, and its long options."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: sorted({s for action in parser._actions for s in action.option_strings if s.startswith("--")})
        for name, parser in sub.choices.items()
    }


def bash_script(commands: dict[str, list[str]]) -> str:
    cases = "\n".join(f'        {name}) opts="{" ".join(opts)}" ;;' for name, opts in commands.items())
    return f"""\
# ebooklet completion for bash (ebooklet completion bash)
_ebooklet() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} opts=""
    if [ "$COMP_CWORD" -eq 1 ]; then
        COMPREPLY=($(compgen -W "{" ".join(commands)} --help --version" -- "$cur"))
        return
    fi
    case "${{COMP_WORDS[1]}}" in
{cases}
    esac
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}}
complete -o filenames -F _ebooklet ebooklet
"""


def zsh_script(commands: dict[str, list[str]]) -> str:
    return "#compdef ebooklet\n# ebooklet completion for zsh (ebooklet completion zsh)\n" \
        "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(commands)


def fish_script(commands: dict[str, list[str]]) -> str:
    lines = ["# ebooklet completion for fish (ebooklet completion fish)",
             f"complete -c ebooklet -n __fish_use_subcommand -f -a '{' '.join(commands)}'"]
    for name, opts in commands.items():
        for opt in opts:
            lines.append(f"complete -c ebooklet -n '__fish_seen_subcommand_from {name}' -l {opt[2:]}")
    return "\n".join(lines) + "\n"


def _completion(args: argparse.Namespace) -> int:
    script = {"bash": bash_script, "zsh": zsh_script, "fish": fish_script}[args.shell]
    if args.json:
        print_json({"shell": args.shell, "script": script(_commands(args.root_parser))})
    else:
        print(script(_commands(args.root_parser)), end="")
    return 0
