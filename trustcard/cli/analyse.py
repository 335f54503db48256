"""`trustcard analyse URL [--wait]`: submit a post's analysis and follow its stages.

`--wait` follows the analysis on its event stream, as `submit --wait` follows a task (one
follower, `trustcard.cli.progress.follow_events`): a line (or the bar) moves as each stage
starts, the end is seen at once, and a server without the stream is polled instead.
"""

from __future__ import annotations

import json
import sys

import click

from trustcard.cli.main import EXIT_STATUS_HELP, OUTCOMES, Context, ExitCode, cli, emit, json_option
from trustcard.cli.progress import display_for, follow_events


@cli.command(epilog=EXIT_STATUS_HELP)
@click.argument("url")
@click.option("--wait", "-w", is_flag=True,
              help="Follow the analysis with a bar that moves stage by stage until it ends, then print its result.")
@json_option
@click.pass_context
def analyse(ctx: click.Context, url: str, wait: bool) -> None:
    """Analyse the Instagram post at URL (a post, reel or tv URL).

    While the same post is being analysed, that analysis is followed instead of a new one.

    \b
    Example:
      trustcard analyse https://www.instagram.com/p/ABC123/ --wait
    """
    obj: Context = ctx.obj
    analysis = obj.client.submit_analysis(url)
    if not wait:
        emit(analysis if obj.as_json else {"id": analysis["id"], "status": analysis["status"]}, obj.as_json)
        return
    if not obj.as_json:
        click.echo(f"analysis {analysis['id']} of {analysis['url']}", err=True)
    try:
        ended = follow_events(
            lambda last_id: obj.client.analysis_events(analysis["id"], last_id),
            lambda: obj.client.analysis(analysis["id"]),
            display_for(sys.stderr, obj.as_json),
        )
    except KeyboardInterrupt:
        click.echo(f"stopped following analysis {analysis['id']}; it carries on", err=True)
        raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None
    if obj.as_json:
        emit(ended, True)
    elif ended["status"] == "completed":
        click.echo(json.dumps(ended["result"], indent=2))
    else:
        click.echo(f"analysis {ended['id']} {ended['status']}: {ended.get('error') or 'no reason given'}", err=True)
    ctx.exit(OUTCOMES[ended["status"]])
