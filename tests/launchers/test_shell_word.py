"""Quoting for generated bash scripts: every value comes back from bash byte for byte, and a
value with a control character never puts a raw CR or LF in the script (issue 12, bug 4: sbatch
refused scripts holding ``\\r\\n``)."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launchers.pjm.text import PjmScript, render_pjm_script
from launchers.shell import shell_word
from launchers.slurm.text import SbatchScript, render_sbatch_script
from orchestrator.exceptions import InvalidRequestError

AWKWARD = [
    "",
    "plain",
    "a\nb\r\nc",
    "\r\n",
    "tail\n",
    'it\'s $HOME `id` $(id) \\ "q" * ~ !',
    "\\x41\\n",  # backslash sequences stay text
    "\x01\x1b[31m\x7f\t",
    "é 学習 🚀",
    "\x0fa",  # a control character followed by a hex digit
]


def bash_words(*words: str) -> list[str]:
    """What bash makes of ``words`` written as shell_word()s: one value per argument."""
    script = "printf '%s\\0' " + " ".join(shell_word(w) for w in words) + "\n"
    assert "\r" not in script and script.count("\n") == 1
    out = subprocess.run(["bash", "-c", script], check=True, capture_output=True).stdout
    return out.decode("utf-8").split("\0")[:-1]


def test_awkward_values_come_back_exactly() -> None:
    assert bash_words(*AWKWARD) == AWKWARD


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0")),
        min_size=1,
        max_size=5,
    )
)
def test_any_text_comes_back_exactly(words: list[str]) -> None:
    assert bash_words(*words) == words


@pytest.mark.parametrize("value", ["a\0b", "\ud800"])
def test_what_no_script_can_hold_is_refused_naming_the_field(value: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        shell_word(value, "env")
    assert info.value.field == "env"


def test_scripts_keep_values_off_their_own_lines() -> None:
    argv = ["python", "-c", "import sys\r\nprint(sys.argv)", "a\nb"]
    env = {"PEM": "-----BEGIN-----\r\nabc\n-----END-----\n"}
    sbatch = render_sbatch_script(SbatchScript(name="x", argv=argv, nodelist=["n1"], env=env))
    pjm = render_pjm_script(PjmScript(name="x", argv=argv, nodes=1, env=env))
    for text in (sbatch, pjm):
        assert "\r" not in text
        lines = text.splitlines()
        assert lines[-1].endswith(" ".join(shell_word(a) for a in argv))
        assert f"export PEM={shell_word(env['PEM'])}" in lines
