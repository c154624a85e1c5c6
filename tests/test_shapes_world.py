import numpy as np
import pytest

from noisekit.shapes.captions import parse_caption
from noisekit.shapes.dataset import ShapesDataset, heldout_captions, render_scenes
from noisekit.shapes.pixelcheck import border_brightness, read_image, relation_holds
from noisekit.shapes.scenes import BACKGROUNDS, COLORS, sample_scene, with_article


def test_scenes_are_deterministic_and_sliceable():
    images_a, scenes_a = render_scenes(7, 20)
    images_b, scenes_b = render_scenes(7, 5, start=15)
    assert np.array_equal(images_a[15:], images_b)
    assert [s.caption for s in scenes_a[15:]] == [s.caption for s in scenes_b]
    assert images_a.shape == (20, 64, 64, 3) and images_a.dtype == np.uint8


def test_world_statistics_match_the_spec():
    scenes = [sample_scene(11, i) for i in range(3000)]
    one = [s for s in scenes if len(s.objects) == 1]
    assert abs(len(one) / len(scenes) - 0.6) < 0.03
    for name in ("size", "position", "background"):
        assert abs(np.mean([s.stated[name] for s in one]) - 0.7) < 0.04
    for scene in scenes:
        assert all(o.color != scene.background for o in scene.objects)  # never white on white
        if len(scene.objects) == 2:
            first, second = scene.objects
            assert first.size == second.size == "small" and first.position != second.position
            dx, dy = first.center[0] - second.center[0], first.center[1] - second.center[1]
            gap = {"to the left of": -dx, "to the right of": dx, "above": -dy, "below": dy}[scene.relation]
            assert gap >= 16


def test_captions_follow_the_grammar_and_articles():
    assert with_article("orange circle") == "an orange circle" and with_article("large orange square") == "a large orange square"
    for i in range(2000):
        scene = sample_scene(3, i)
        parsed = parse_caption(scene.caption)
        assert parsed is not None, scene.caption
        assert [o["color"] for o in parsed["objects"]] == [o.color for o in scene.objects]
        assert parsed.get("background") == (scene.background if scene.stated["background"] else None)
        if len(scene.objects) == 1:
            assert parsed.get("position") == (scene.objects[0].position if scene.stated["position"] else None)
        else:
            assert parsed["relation"] == scene.relation
    assert parse_caption("an orange cross above a red square") is not None
    assert parse_caption("a photo of a dog") is None and parse_caption("") is None


def test_dataset_empties_a_tenth_of_captions_and_excludes_heldout_prompts():
    dataset = ShapesDataset(seed=5, count=1000)
    captions = [dataset[i]["caption"] for i in range(len(dataset))]
    assert abs(captions.count("") / len(captions) - 0.1) < 0.03
    assert not heldout_captions() & set(s.caption for s in dataset.scenes)
    item = dataset[0]
    assert item["pixel_values"].shape == (3, 64, 64) and -1 <= item["pixel_values"].min() <= item["pixel_values"].max() <= 1


def test_pixel_check_reads_rendered_scenes_exactly():
    images, scenes = render_scenes(21, 300)
    for image, scene in zip(images, scenes):
        read = read_image(image)
        assert read["background"] == scene.background
        assert len(read["objects"]) == len(scene.objects)
        if len(scene.objects) == 1:
            found, obj = read["objects"][0], scene.objects[0]
            assert (found["color"], found["shape"], found["size"], found["position"]) == \
                (obj.color, obj.shape, obj.size, obj.position)
        else:
            by_place = sorted(read["objects"], key=lambda o: o["center"])
            truth = sorted(scene.objects, key=lambda o: o.center)
            assert [o["color"] for o in by_place] == [o.color for o in truth]
            first = min(read["objects"], key=lambda o: np.hypot(o["center"][0] - scene.objects[0].center[0],
                                                                o["center"][1] - scene.objects[0].center[1]))
            second = [o for o in read["objects"] if o is not first][0]
            assert relation_holds(scene.relation, first, second)


@pytest.mark.parametrize("background,expected", [("black", 0.0), ("white", 1.0)])
def test_border_brightness(background, expected):
    image = np.full((64, 64, 3), BACKGROUNDS[background], dtype=np.uint8)
    image[20:40, 20:40] = COLORS["red"]
    assert border_brightness(image) == pytest.approx(expected)
