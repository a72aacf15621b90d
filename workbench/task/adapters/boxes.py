"""Box geometry and COCO evaluation for the detection adapter: IoU, NMS, greedy matching, mAP."""

from __future__ import annotations

import contextlib
import io

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` (n, 4) with every box of ``b`` (m, 4), both x1 y1 x2 y2."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float, limit: int | None = None
) -> np.ndarray:
    """Indices kept by per-class non-maximum suppression, best score first, at most ``limit``.

    One IoU row per kept box, never the full matrix: an int8 head can pass thousands of
    candidates (every score rounded up to the same level), and n x n would not fit in memory.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    # Per class by shifting each class's boxes out of reach of the others (as ultralytics does).
    shift = (np.abs(boxes).max() + 1.0 if boxes.size else 0.0) * 2 * np.asarray(classes, np.float64)
    x1, y1, x2, y2 = (boxes + shift[:, None]).T
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    while order.size and (limit is None or len(keep) < limit):
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = w * h
        union = area[best] + area[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.array(keep, np.int64)


def match(boxes_a, classes_a, boxes_b, classes_b, min_iou: float) -> dict:
    """Greedy one-to-one matching, best IoU first, same class only, IoU >= ``min_iou``.

    Returns {"matched", "unmatched_a", "unmatched_b", "f1", "mean_iou"}; f1 is 1.0 when both
    sets are empty, mean_iou NaN without a match.
    """
    n_a, n_b = len(boxes_a), len(boxes_b)
    iou = iou_matrix(boxes_a, boxes_b)
    iou[np.asarray(classes_a)[:, None] != np.asarray(classes_b)[None, :]] = 0.0
    ious = []
    while iou.size and iou.max() >= min_iou:
        i, j = np.unravel_index(np.argmax(iou), iou.shape)
        ious.append(float(iou[i, j]))
        iou[i, :], iou[:, j] = -1.0, -1.0
    matched = len(ious)
    return {
        "matched": matched,
        "unmatched_a": n_a - matched,
        "unmatched_b": n_b - matched,
        "f1": 2 * matched / (n_a + n_b) if n_a + n_b else 1.0,
        "mean_iou": float(np.mean(ious)) if ious else float("nan"),
    }


def coco_box(image_id: int, box: np.ndarray, cls: int, **extra) -> dict:
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
    # category ids start at 1: pycocotools treats ids as keys, 0 works but reads oddly in its dumps
    return {
        "image_id": image_id,
        "category_id": int(cls) + 1,
        "bbox": [x1, y1, w, h],
        "area": w * h,
        "iscrowd": 0,
        **extra,
    }


def coco_eval(images: list[dict], gt: list[dict], dt: list[dict]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    categories = sorted({a["category_id"] for a in gt + dt})
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress and tables
        coco_gt = COCO()
        coco_gt.dataset = {
            "images": images,
            "annotations": gt,
            "categories": [{"id": c, "name": str(c)} for c in categories],
        }
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dt)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats
