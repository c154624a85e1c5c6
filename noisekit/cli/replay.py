"""`noisekit replay`: regenerate a results.json's images from their recipes and say, per image, whether it is
identical, within tolerance, or different; exit status 1 only when one is different."""

import json


def register(commands):
    parser = commands.add_parser("replay", help="regenerate the images of a results.json from their recipes")
    parser.add_argument("results", help="results.json written by noisekit generate or search")
    parser.add_argument("--output_dir", default=None, help="where the replayed images go (default: replay/ beside it)")
    parser.add_argument("--npnet", default=None, help="the NPNet of golden-noise recipes (default: the recorded one)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=run)


def run(args):
    from tqdm.auto import tqdm

    from ..replay import replay_results

    with tqdm(desc="prompts", disable=args.quiet) as progress:
        report = replay_results(args.results, output_dir=args.output_dir, npnet=args.npnet, device=args.device,
                                progress=progress)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for row in report["per_image"]:
            if row["status"] != "identical":
                print(f"{row['file']}: {row['status']} (largest pixel difference {row['pixel_difference']})")
        noise = report["noise"]
        print(f"replayed {report['images']} images into {report['output_dir']}: {report['identical']} identical, "
              f"{report['within tolerance']} within tolerance, {report['different']} different (largest pixel "
              f"difference {report['max_pixel_difference']}); noises: {noise['identical']} identical, "
              f"{noise['within tolerance']} within tolerance (largest {report['max_noise_difference']:.2g}), "
              f"{noise['different']} different")
    return 1 if report["different"] or report["noise"]["different"] else 0
