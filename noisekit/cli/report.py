"""`noisekit report OUT`: the results page (`OUT/index.html`) of a generate or search run folder; static files
only, opened from disk. `generate` and `search` write it at the end of every run; this writes it again."""


def register(commands):
    parser = commands.add_parser("report", help="the results page (index.html) of a run folder")
    parser.add_argument("output_dir", help="a folder that noisekit generate or search wrote")
    parser.set_defaults(run=run)


def run(args):
    from ..report import write_report

    print(f"wrote {write_report(args.output_dir)}")
    return 0
