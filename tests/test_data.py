"""Reading the four input layouts into one sample table."""
import numpy as np
import pandas as pd
import pytest

from conftest import need_shared, write_png
from foldkit.data.reading import detect_layout, read_competition
from foldkit.data.images import ImageError, InputError, decode_image


def make_csv_comp(root, n=12, ext=".png", id_col="id", label_col="label", with_ext_in_id=False):
    rows = []
    for i in range(n):
        img = np.full((10, 10), i * 10, np.uint8)
        iid = f"{i:03d}"
        write_png(root / "train" / f"{iid}{ext}", img)
        rows.append({id_col: iid + (ext if with_ext_in_id else ""), label_col: ["cat", "dog", "cow"][i % 3]})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    return root


def test_csv_images_infers_extension_and_keeps_leading_zeros(tmp_path):
    make_csv_comp(tmp_path, id_col="image_id", label_col="target")
    write_png(tmp_path / "test" / "900.png", np.zeros((10, 10), np.uint8))
    pd.DataFrame({"image_id": ["900"], "target": ["cat"]}).to_csv(tmp_path / "sample_submission.csv", index=False)
    comp = read_competition(tmp_path)
    assert comp.layout == "csv_images"
    assert comp.id_col == "image_id" and comp.label_col == "target"
    assert comp.train["id"].tolist()[:2] == ["000", "001"]
    assert comp.train["path"].tolist()[:2] == ["train/000.png", "train/001.png"]
    assert comp.classes == ["cat", "cow", "dog"]
    assert comp.test["path"].tolist() == ["test/900.png"]
    img = decode_image(tmp_path / comp.train["path"][3])
    assert (img == 30).all()


def test_csv_images_ids_with_extension_and_explicit_columns(tmp_path):
    make_csv_comp(tmp_path, ext=".jpg", with_ext_in_id=True, id_col="file", label_col="kind")
    comp = read_competition(tmp_path, id_col="file", label_col="kind")
    assert comp.train["path"][0] == "train/000.jpg"
    with pytest.raises(InputError, match="no column 'nope'"):
        read_competition(tmp_path, id_col="nope")


def test_missing_image_names_row_and_file_and_skip_flag(tmp_path):
    make_csv_comp(tmp_path)
    (tmp_path / "train" / "004.png").unlink()
    (tmp_path / "train" / "007.png").write_bytes(b"")
    with pytest.raises(ImageError) as e:
        read_competition(tmp_path)
    msg = str(e.value)
    assert "data row 5 (id '004')" in msg and "data row 8" in msg and "007.png" in msg and "zero bytes" in msg
    comp = read_competition(tmp_path, skip_bad_images=True)
    assert len(comp.train) == 10
    assert sorted(r for _, r, _, _ in comp.bad_files) == [5, 8]


def test_empty_label_rows_are_reported(tmp_path):
    make_csv_comp(tmp_path)
    df = pd.read_csv(tmp_path / "train.csv", dtype=str)
    df.loc[[2, 5], "label"] = ""
    df.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(InputError, match=r"data rows \[3, 6\]"):
        read_competition(tmp_path)


def test_class_folders_with_val_and_flat_test(tmp_path):
    for split, cls, n in [("train", "ants", 3), ("train", "bees", 2), ("val", "ants", 1), ("val", "bees", 1)]:
        for i in range(n):
            write_png(tmp_path / split / cls / f"{i}.png", np.zeros((8, 8), np.uint8))
    write_png(tmp_path / "test" / "a.png", np.zeros((8, 8), np.uint8))
    (tmp_path / "train" / "ants" / ".DS_Store").write_bytes(b"junk")
    comp = read_competition(tmp_path)
    assert comp.layout == "class_folders"
    assert len(comp.train) == 7 and comp.classes == ["ants", "bees"]
    assert comp.train["id"].is_unique
    assert set(comp.train["split"]) == {"train", "val"}
    assert comp.test["id"].tolist() == ["a"]


@pytest.mark.parametrize("shape", ["NHW", "NHWC", "NCHW", "float01", "onehot"])
def test_numpy_layouts(tmp_path, digits_32, shape):
    x, y = digits_32
    x, y = x[:50], y[:50]
    arr = {"NHW": x, "NHWC": x[..., None], "NCHW": np.repeat(x[:, None], 3, 1),
           "float01": x.astype(np.float32) / 255.0, "onehot": x}[shape]
    yy = np.eye(10)[y] if shape == "onehot" else y
    np.save(tmp_path / "x_train.npy", arr)
    np.save(tmp_path / "y_train.npy", yy)
    np.save(tmp_path / "x_test.npy", x[:5])
    comp = read_competition(tmp_path)
    assert comp.layout == "numpy"
    px = comp.pixels("train")
    assert px.dtype == np.uint8 and px.shape[:3] == (50, 32, 32)
    assert np.abs(px[..., 0].astype(int) - x).max() <= 1
    assert comp.train["label"].tolist() == y.tolist()
    assert len(comp.test) == 5 and comp.pixels("test").shape[0] == 5


def test_numpy_bad_inputs(tmp_path):
    np.save(tmp_path / "x_train.npy", np.zeros((5, 8, 8), np.uint8))
    np.save(tmp_path / "y_train.npy", np.zeros(4))
    with pytest.raises(InputError, match="4 labels but the images file has 5"):
        read_competition(tmp_path)
    np.save(tmp_path / "x_train.npy", np.full((4, 8, 8), 300.0))
    with pytest.raises(InputError, match="values span"):
        read_competition(tmp_path)


def test_pixel_csv(tmp_path, digits_32):
    x, y = digits_32
    x = x[:30, ::4, ::4]   # 8x8 -> 64 pixels
    cols = [f"pixel{i}" for i in range(64)]
    df = pd.DataFrame(x.reshape(30, -1), columns=cols)
    df.insert(0, "label", y[:30])
    df.to_csv(tmp_path / "train.csv", index=False)
    df.drop(columns="label").iloc[:7].to_csv(tmp_path / "test.csv", index=False)
    pd.DataFrame({"ImageId": range(1, 8), "Label": 0}).to_csv(tmp_path / "sample_submission.csv", index=False)
    assert detect_layout(tmp_path) == "pixel_csv"
    comp = read_competition(tmp_path)
    assert comp.pixels("train").shape == (30, 8, 8, 1)
    assert (comp.pixels("train")[..., 0] == x).all()
    assert comp.test["id"].tolist() == [str(i) for i in range(1, 8)] and comp.id_col == "ImageId"
    pd.DataFrame(np.zeros((3, 63), int), columns=cols[:63]).assign(label=1).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(InputError, match="not a square image"):
        read_competition(tmp_path)


def test_unknown_layout_says_what_is_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="cannot tell the input layout"):
        read_competition(tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        read_competition(tmp_path / "nope")


def test_hymenoptera_real_photos():
    root = need_shared("data", "hymenoptera")
    comp = read_competition(root)
    assert comp.layout == "class_folders" and comp.classes == ["ants", "bees"]
    assert len(comp.train) == 245 + 153
    paths = comp.train["path"].tolist()
    gif = next(p for p in paths if p.endswith(".gif"))
    jpeg = next(p for p in paths if p.endswith(".jpeg"))
    spaced = next(p for p in paths if " " in p)
    for p in (gif, jpeg, spaced):
        img = decode_image(root / p)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and img.size > 0


def test_labels_and_ids_are_the_text_written(tmp_path):
    make_csv_comp(tmp_path)
    labels = ["007", "7", "NA", "None", "null", "n/a"] * 2
    ids = ["NA"] + [f"{i:03d}" for i in range(1, 12)]
    (tmp_path / "train" / "000.png").rename(tmp_path / "train" / "NA.png")
    (tmp_path / "train.csv").write_text("id,label\n" + "".join(f"{i},{c}\n" for i, c in zip(ids, labels)))
    comp = read_competition(tmp_path)
    assert comp.train["id"].tolist() == ids and comp.train["label"].tolist() == labels
    assert comp.classes == sorted(set(labels))
    (tmp_path / "train.csv").write_text("id,label\n" + "".join(f"{i},{c}\n" for i, c in zip(ids, [3, -1, 10] * 4)))
    assert read_competition(tmp_path).classes == [-1, 3, 10]      # plain integers stay integers


def test_one_hot_csv_read_as_text_still_gives_class_names(tmp_path):
    make_csv_comp(tmp_path)
    rows = ["".join(f",{int(k == i % 3)}" for k in range(3)) for i in range(12)]
    (tmp_path / "train.csv").write_text("image_id,healthy,rust,scab\n"
                                        + "".join(f"{i:03d}{r}\n" for i, r in enumerate(rows)))
    comp = read_competition(tmp_path)
    assert comp.one_hot == ["healthy", "rust", "scab"]
    assert comp.train["label"].tolist()[:4] == ["healthy", "rust", "scab", "healthy"]


def test_pixel_csv_labels_as_written(tmp_path):
    cols = [f"pixel{i}" for i in range(4)]
    df = pd.DataFrame(np.zeros((4, 4), int), columns=cols)
    df.insert(0, "label", ["007", "7", "NA", "007"])
    df.to_csv(tmp_path / "train.csv", index=False)
    assert read_competition(tmp_path).train["label"].tolist() == ["007", "7", "NA", "007"]
