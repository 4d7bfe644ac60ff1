"""data/transforms/: alignment under every geometric transform, mask values, photometric purity, mmseg parity,
copy-paste label correctness (the competition bug relabelled every original object as class 1)."""
import cv2
import numpy as np
import pytest

from data import transforms as T
from data.classes import IGNORE_INDEX


# ------------------------------------------------------------------------------------------------ fixtures
class FakeDataset:
    """The CocoSegDataset interface on synthetic data: textured images, rectangles/ellipses painted largest first."""

    def __init__(self, n=6, size=(48, 64), seed=0, vary_size=False, labelled=True, n_objects=(2, 6)):
        self.n, self.size, self.seed, self.vary_size = n, size, seed, vary_size
        self.has_labels, self.n_objects = labelled, n_objects
        self.image_ids = [f"batch_01_vt/{i:04d}.jpg" for i in range(n)]

    def __len__(self):
        return self.n

    def _make(self, i):
        rng = np.random.default_rng([self.seed, i])
        h, w = self.size
        if self.vary_size:
            h, w = h + 8 * (i % 3), w - 4 * (i % 2)
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        insts = []
        for _ in range(int(rng.integers(*self.n_objects))):
            m = np.zeros((h, w), np.uint8)
            cy, cx = int(rng.integers(h)), int(rng.integers(w))
            ry, rx = int(rng.integers(3, h // 2)), int(rng.integers(3, w // 2))
            if rng.random() < 0.5:
                cv2.rectangle(m, (cx - rx, cy - ry), (cx + rx, cy + ry), 1, -1)
            else:
                cv2.ellipse(m, (cx, cy), (rx, ry), 0, 0, 360, 1, -1)
            insts.append((int(rng.integers(1, 11)), m.astype(bool)))
        insts.sort(key=lambda t: -int(t[1].sum()))
        return image, insts

    def instances(self, i):
        return self._make(i)[1]

    def __getitem__(self, i):
        image, insts = self._make(i)
        mask = np.zeros(image.shape[:2], np.uint8)
        for c, m in insts:
            mask[m] = c
        return dict(image=image, mask=mask if self.has_labels else None, image_id=self.image_ids[i])


BLOCK = 16


def coord_image(h=96, w=128):
    """Blocks of 16 px; colour (32·bx+16, 32·by+16, 128) and mask id 1 + 8·bx + by both encode the block."""
    y, x = np.mgrid[0:h, 0:w]
    bx, by = x // BLOCK, y // BLOCK
    image = np.stack([32 * bx + 16, 32 * by + 16, np.full_like(bx, 128)], -1).astype(np.uint8)
    mask = (1 + 8 * bx + by).astype(np.uint8)
    return image, mask


def decode(image):
    """Block id from the colour, and whether the colour is exactly a block colour (not an interpolated mix)."""
    r, g, b = (image[..., c].astype(int) for c in range(3))
    exact = ((r - 16) % 32 == 0) & ((g - 16) % 32 == 0) & (b == 128)
    return 1 + 8 * ((r - 16) // 32) + (g - 16) // 32, exact


def assert_aligned(image, mask, in_mask, exact_only=False, min_checkable=0.7):
    assert image.shape[:2] == mask.shape, (image.shape, mask.shape)
    assert set(np.unique(mask)) <= set(np.unique(in_mask)) | {IGNORE_INDEX}
    pad = mask == IGNORE_INDEX
    assert (image[pad] == 0).all(), "padding: image must be 0 where the mask is 255"
    ids, exact = decode(image)
    valid = ~pad
    if exact_only:
        assert exact[valid].all()
    checkable = valid & exact
    assert checkable.sum() >= min_checkable * valid.sum()
    bad = checkable & (ids != mask)
    assert not bad.any(), f"{bad.sum()} misaligned pixels"


GEOMETRIC = [
    ("resize_fixed", T.Resize((80, 100)), False),
    ("resize_keep_ratio_down", T.Resize((64, 64), keep_ratio=True), False),
    ("resize_keep_ratio_up", T.Resize((300, 200), keep_ratio=True), False),
    ("resize_bicubic", T.Resize((150, 170), interpolation="bicubic"), False),
    ("random_resize", T.RandomResize((256, 96), ratio_range=(0.5, 2.0)), False),
    ("random_crop", T.RandomCrop((64, 80)), True),
    ("random_crop_cat", T.RandomCrop((40, 40), cat_max_ratio=0.75), True),
    ("random_crop_larger", T.RandomCrop((128, 64)), True),
    ("flip_h", T.RandomFlip(1.0, "horizontal"), True),
    ("flip_v", T.RandomFlip(1.0, "vertical"), True),
    ("flip_both", T.RandomFlip(1.0, ("horizontal", "vertical")), True),
    ("rotate90", T.RandomRotate90(1.0), True),
    ("pad", T.Pad((128, 160)), True),
    ("train_geometry", T.build_transform("train", 64, ratio_range=(0.5, 2.0), photometric=False, blur_prob=0), False),
    ("train_geometry_resize", T.build_transform("train", 72, photometric=False, blur_prob=0), False),
]


@pytest.mark.parametrize("name,t,exact", GEOMETRIC, ids=[g[0] for g in GEOMETRIC])
def test_geometric_alignment(name, t, exact):
    image, mask = coord_image()
    for seed in range(8):
        out_img, out_mask = t(image, mask, np.random.default_rng(seed))
        assert out_img.dtype == np.uint8 and out_mask.dtype == np.uint8
        assert_aligned(out_img, out_mask, mask, exact_only=exact)
        # Without a mask (unlabelled eval data) the image takes the same path.
        img_only, none = t(image, None, np.random.default_rng(seed))
        assert none is None
        np.testing.assert_array_equal(img_only, out_img)


def test_alignment_check_catches_a_misaligned_transform():
    image, mask = coord_image()
    with pytest.raises(AssertionError):
        assert_aligned(cv2.flip(image, 1), mask, mask)
    with pytest.raises(AssertionError):
        assert_aligned(cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE), cv2.rotate(mask, cv2.ROTATE_90_COUNTERCLOCKWISE),
                       mask)


def test_rotate90_uses_all_four_rotations():
    image, mask = coord_image(64, 64)
    seen = set()
    for seed in range(40):
        out, _ = T.RandomRotate90(1.0)(image, mask, np.random.default_rng(seed))
        seen.add(next(k for k in range(4) if np.array_equal(out, np.rot90(image, k))))
    assert seen == {0, 1, 2, 3}


def test_resize_keep_ratio_follows_mmcv_rescale():
    assert T.rescale_size(512, 512, (2048, 512)) == (512, 512)
    assert T.rescale_size(480, 640, (2048, 512)) == (512, 683)  # short edge bound
    assert T.rescale_size(100, 1000, (2048, 512)) == (205, 2048)  # long edge bound
    img = np.zeros((480, 640, 3), np.uint8)
    assert T.Resize((512, 512), keep_ratio=True)(img, None, None)[0].shape == (384, 512, 3)


def test_random_crop_cat_max_ratio():
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 48:] = 3  # a crop of 32 columns is mixed only when it reaches column 48
    img = np.zeros((64, 64, 3), np.uint8)
    mixed = 0
    for seed in range(30):
        _, m = T.RandomCrop((64, 32), cat_max_ratio=0.75)(img, mask, np.random.default_rng(seed))
        cnt = np.bincount(m.ravel())
        cnt = cnt[cnt > 0]
        mixed += len(cnt) > 1 and cnt.max() / cnt.sum() < 0.75
    assert mixed >= 25  # plain uniform crops satisfy this only ~ 8/33 of the time


def test_pad_values_and_no_255_without_padding():
    img, mask = np.full((30, 40, 3), 7, np.uint8), np.full((30, 40), 2, np.uint8)
    pi, pm = T.Pad((32, 48))(img, mask, None)
    assert pi.shape == (32, 48, 3) and (pi[30:] == 0).all() and (pi[:, 40:] == 0).all()
    assert (pm[30:] == 255).all() and (pm[:, 40:] == 255).all() and (pm[:30, :40] == 2).all()
    ds = FakeDataset(n=4, size=(64, 64))
    t = T.build_transform("train", 64)
    for i in range(4):
        s = ds[i]
        _, m = t(s["image"], s["mask"], np.random.default_rng(i))
        assert set(np.unique(m)) <= set(np.unique(s["mask"])), "255 without padding or blending"


# ---------------------------------------------------------------------------------------------- photometric
PHOTOMETRIC = [T.PhotoMetricDistortion(), T.Blur(7), T.GaussianBlur(7), T.MotionBlur(7),
               T.OneOf([T.Blur(), T.GaussianBlur(), T.MotionBlur()], p=1.0), T.Normalize()]


@pytest.mark.parametrize("t", PHOTOMETRIC, ids=lambda t: type(t).__name__)
def test_photometric_never_touches_mask(t):
    ds = FakeDataset(n=3)
    changed = 0
    for seed in range(6):
        s = ds[seed % 3]
        mask_before = s["mask"].copy()
        img, m = t(s["image"], s["mask"], np.random.default_rng(seed))
        assert m is s["mask"]
        np.testing.assert_array_equal(m, mask_before)
        assert img.shape == s["image"].shape
        changed += not np.array_equal(img, s["image"])
    assert changed > 0


def _mmseg_photometric_reference(rgb, rng, bd=32, cr=(0.5, 1.5), sr=(0.5, 1.5), hd=18):
    """A line-by-line transcription of mmseg 1.x PhotoMetricDistortion on the BGR image (mmcv loads BGR),
    drawing from ``rng`` in the same order."""
    def convert(img, alpha=1, beta=0):
        img = img.astype(np.float32) * alpha + beta
        return np.clip(img, 0, 255).astype(np.uint8)

    def contrast(img):
        if rng.integers(2):
            return convert(img, alpha=rng.uniform(*cr))
        return img

    img = np.ascontiguousarray(rgb[..., ::-1])
    if rng.integers(2):
        img = convert(img, beta=rng.uniform(-bd, bd))
    mode = rng.integers(2)
    if mode == 1:
        img = contrast(img)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 1] = convert(hsv[:, :, 1], alpha=rng.uniform(*sr))
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if rng.integers(2):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        hsv[:, :, 0] = (hsv[:, :, 0].astype(int) + rng.integers(-hd, hd)) % 180
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    if mode == 0:
        img = contrast(img)
    return np.ascontiguousarray(img[..., ::-1])


def test_photometric_matches_mmseg_transcription():
    img = FakeDataset(n=1, size=(40, 56))[0]["image"]
    t = T.PhotoMetricDistortion()
    for seed in range(40):
        ours, _ = t(img, None, np.random.default_rng(seed))
        ref = _mmseg_photometric_reference(img, np.random.default_rng(seed))
        np.testing.assert_array_equal(ours, ref, err_msg=f"seed {seed}")


# ----------------------------------------------------------------------------------------------- copy-paste
def _target():
    h, w = 64, 96
    img = np.full((h, w, 3), 50, np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[8:40, 4:28], mask[8:40, 36:60], mask[8:40, 68:92] = 3, 5, 7
    img[mask == 3], img[mask == 5], img[mask == 7] = 90, 130, 170
    return img, mask


def _source(shape=(64, 96), boxes=(((20, 56), (40, 80), 9),)):
    h, w = shape
    img = np.full((h, w, 3), 230, np.uint8)
    insts, mask = [], np.zeros((h, w), np.uint8)
    for (y1, y2), (x1, x2), c in boxes:
        m = np.zeros((h, w), bool)
        m[y1:y2, x1:x2] = True
        insts.append((c, m))
        mask[m] = c
        img[m] = 10 * c + 3  # differs from every target colour
    return img, mask, insts


def test_copy_paste_keeps_original_class_ids():
    """Regression: the competition's copy-paste set every original object to class 1."""
    img, mask = _target()
    src_img, _, insts = _source()
    cp = T.CopyPaste(lambda rng: (src_img, None, insts), p=1.0, fraction=1.0, blur_sigma=0)
    out_img, out_mask = cp(img, mask, np.random.default_rng(0))
    pasted = insts[0][1]
    expected = mask.copy()
    expected[pasted] = 9
    np.testing.assert_array_equal(out_mask, expected)
    for c in (3, 5, 7):  # every original object still has its class wherever it is not covered
        assert ((out_mask == c) == ((mask == c) & ~pasted)).all()
    assert (out_mask[pasted] == 9).all()  # pasted object on top, including over class 5
    np.testing.assert_array_equal(out_img[pasted], src_img[pasted])
    np.testing.assert_array_equal(out_img[~pasted], img[~pasted])
    assert mask[30, 50] == 5 and out_mask[30, 50] == 9


def test_copy_paste_blurred_alpha():
    img, mask = _target()
    src_img, _, insts = _source()
    pasted = insts[0][1]
    sigma = 3.0
    cp = T.CopyPaste(lambda rng: (src_img, None, insts), p=1.0, fraction=1.0, blur_sigma=sigma)
    out_img, out_mask = cp(img, mask, np.random.default_rng(0))
    k = np.ones((3, 3), np.uint8)
    inner = cv2.erode(pasted.astype(np.uint8), k, iterations=int(3 * sigma)) > 0
    far = cv2.dilate(pasted.astype(np.uint8), k, iterations=int(4 * sigma) + 2) == 0
    assert (out_mask[inner] == 9).all()
    assert np.abs(out_img[inner].astype(int) - src_img[inner]).max() <= 2
    np.testing.assert_array_equal(out_mask[far], mask[far])
    np.testing.assert_array_equal(out_img[far], img[far])
    changed = out_mask != mask
    assert set(np.unique(out_mask[changed])) <= {9, IGNORE_INDEX}
    kept = out_mask != 9
    assert ((out_mask[kept] == mask[kept]) | (out_mask[kept] == IGNORE_INDEX)).all()
    # soft-edge labels: pasted class exactly where inside the object and alpha ≥ 0.5; 255 only on thin slivers
    assert (out_mask == IGNORE_INDEX).sum() <= 0.25 * pasted.sum() ** 0.5 * 4


def test_copy_paste_uses_visible_region_of_occluded_source_objects():
    img, mask = _target()
    # class 2 big box with class 4 painted on top of its middle (painting order: largest first)
    src_img, _, insts = _source(boxes=(((4, 60), (10, 90), 2), ((20, 40), (30, 60), 4)))
    cp = T.CopyPaste(lambda rng: (src_img, None, insts), p=1.0, fraction=0.1, blur_sigma=0)
    hole = insts[1][1]
    seen = set()
    for seed in range(20):
        _, out = cp(img, mask, np.random.default_rng(seed))
        pasted = set(np.unique(out)) & {2, 4}
        assert len(pasted) == 1, "fraction 0.1 of 2 objects pastes exactly one"
        seen |= pasted
        if pasted == {2}:  # where class 4 occluded it in the source, class 2 is not visible: target label stays
            np.testing.assert_array_equal(out[hole], mask[hole])
    assert seen == {2, 4}


def test_copy_paste_counts_probability_and_no_mask():
    img, mask = _target()
    boxes = tuple(((2 + 6 * i, 6 + 6 * i), (4 + 9 * i, 12 + 9 * i), 1 + i) for i in range(10))  # disjoint
    src_img, _, insts = _source(boxes=boxes)
    src = lambda rng: (src_img, None, insts)  # noqa: E731

    def n_pasted(out_img, out_mask):
        return sum(int((out_img[m] == 10 * c + 3).all() and (out_mask[m] == c).all()) for c, m in insts)

    for seed in range(5):  # fraction 0.1 of 10 objects: exactly one
        out_img, out_mask = T.CopyPaste(src, p=1.0, fraction=0.1, blur_sigma=0)(img, mask, np.random.default_rng(seed))
        assert n_pasted(out_img, out_mask) == 1
        assert (out_img != img).any(axis=-1).sum() == sum(int(m.sum()) for c, m in insts
                                                         if (out_img[m] == 10 * c + 3).all())
    out_img, out_mask = T.CopyPaste(src, p=1.0, fraction=1.0, max_objects=3, blur_sigma=0)(
        img, mask, np.random.default_rng(0))
    assert n_pasted(out_img, out_mask) == 3
    same_img, same_mask = T.CopyPaste(src, p=0.0)(img, mask, np.random.default_rng(0))
    assert same_img is img and same_mask is mask
    i2, m2 = T.CopyPaste(src, p=1.0)(img, None, np.random.default_rng(0))
    assert i2 is img and m2 is None


def test_copy_paste_resizes_a_source_of_another_size():
    img, mask = _target()
    src_img, _, insts = _source(shape=(150, 120), boxes=(((10, 140), (20, 100), 6),))
    for seed in range(4):
        out_img, out_mask = T.CopyPaste(lambda rng: (src_img, None, insts), p=1.0, fraction=1.0, blur_sigma=0)(
            img, mask, np.random.default_rng(seed))
        assert out_img.shape == img.shape and out_mask.shape == mask.shape
        assert set(np.unique(out_mask)) <= {0, 3, 5, 7, 6}
        assert (out_mask == 6).any()
        assert (out_img[out_mask == 6] == 63).all()  # pasted pixels carry the pasted object's appearance


def test_train_preset_mask_values_with_copy_paste():
    ds = FakeDataset(n=5, size=(56, 72), n_objects=(3, 8))
    fixed = ds[4]
    src = lambda rng: (fixed["image"], fixed["mask"], ds.instances(4))  # noqa: E731
    t = T.build_transform("train", 48, ratio_range=(0.5, 2.0), copy_paste_p=1.0, copy_paste_fraction=0.5,
                          copy_paste_source=src)
    allowed_src = set(np.unique(fixed["mask"]))
    for i in range(4):
        s = ds[i]
        for seed in range(3):
            img, m = t(s["image"], s["mask"], np.random.default_rng([seed, i]))
            assert img.shape == (48, 48, 3) and m.shape == (48, 48)
            assert set(np.unique(m)) <= set(np.unique(s["mask"])) | allowed_src | {IGNORE_INDEX}


def test_copy_paste_without_source_explains():
    img, mask = _target()
    t = T.build_transform("train", 64, copy_paste_p=1.0)
    with pytest.raises(RuntimeError, match="source"):
        t(img, mask, np.random.default_rng(0))


# --------------------------------------------------------------------------------------------------- presets
def test_presets():
    t = T.build_transform("train", 512)
    kinds = [type(s).__name__ for s in t]
    assert kinds == ["Resize", "RandomFlip", "PhotoMetricDistortion", "RandomRotate90", "OneOf", "Pad"]
    t = T.build_transform("train", 512, ratio_range=(0.5, 2.0), copy_paste_p=0.5)
    assert [type(s).__name__ for s in t][:3] == ["CopyPaste", "RandomResize", "RandomCrop"]
    assert T.build_transform("train", 512, **T.TRAIN_DEFAULTS) is not None
    with pytest.raises(TypeError, match="unknown"):
        T.build_transform("train", flip=0.5)
    with pytest.raises(ValueError):
        T.build_transform("nope")
    with pytest.raises(ValueError, match="ratio_range"):
        T.build_transform("train", ratio_range=(0.5,))
    assert T.build_transform("train", ratio_range=None) is not None
    img = np.zeros((20, 30, 3), np.uint8)
    mask = np.ones((20, 30), np.uint8)
    i, m = T.build_transform("eval")(img, mask, None)
    assert i is img and m is mask
    i, m = T.build_transform("eval", scale=(40, 40))(img, mask, None)
    assert i.shape == (27, 40, 3) and m is mask  # image only: the metric is computed at label size


def test_train_preset_is_fast_enough_smoke():
    """Not a benchmark (see bench/bench_data.py): the 512 train pipeline stays well under 50 ms a sample here."""
    import time
    s = FakeDataset(n=1, size=(512, 512))[0]
    t = T.build_transform("train", 512, blur_prob=1.0)
    t(s["image"], s["mask"], np.random.default_rng(0))
    t0 = time.perf_counter()
    for seed in range(5):
        t(s["image"], s["mask"], np.random.default_rng(seed))
    assert (time.perf_counter() - t0) / 5 < 0.05
