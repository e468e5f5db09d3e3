"""YuNet (Wu et al., 2023; libfacedetection, MIT; OpenCV Zoo 2023mar, Apache-2.0): the licence-clean detector.

Decoding written here after the model's published head: anchor-free, one prediction per cell at strides 8,
16 and 32; score = sqrt(cls · obj) (both already sigmoid outputs); box centre = (cell + offset) · stride,
side = exp(log-side) · stride; five points = (cell + offset) · stride. The network takes BGR pixels as they
are (0..255, no mean or scale), padded at the right and bottom to multiples of 32; the repaired graph
(`facelens.models.onnxfix`, done at pull) takes any such size. Its five points are the subject's right eye,
left eye, nose tip, right and left mouth corners, which in the image are ArcFace's order (image-left eye
first), so they feed the same alignment.

Everything around the decoding (input sizes, the retry, the fine tiled pass on large photos, `min_face`,
`max_faces`) is SCRFD's, inherited: both are fully convolutional stride-8/16/32 detectors.
"""

from __future__ import annotations

import numpy as np

from facelens.detect.scrfd import SCRFD, STRIDES

# the default profile's operating point carried over: the lowest threshold (in steps of 0.1) at which YuNet
# finds no more faces in the 25 non-face fixture photos than SCRFD does at its authors' 0.5 (one). Measured
# (README "Licence-clean profile"): 0.5 gives 3 there, 0.6 gives 1; at 0.6 all 13 counted group photos are
# right and 2 of 400 people_celeba photos get no face (SCRFD at 0.5: 1). OpenCV's demo uses 0.9, which here
# loses 21 of those 400 faces.
YUNET_SCORE_THRESHOLD = 0.6


class YuNet(SCRFD):
    """YuNet 2023mar with five keypoints; parameters as `SCRFD`'s (score threshold default 0.6, NMS 0.3)."""

    name = "yunet"
    default_score_threshold, default_nms_threshold = YUNET_SCORE_THRESHOLD, 0.3
    rgb, pixel_mean, pixel_scale = False, 0.0, 1.0  # BGR as it is, 0..255

    @staticmethod
    def _infer(session: object, input_name: str, batch: np.ndarray) -> list[np.ndarray]:
        # the graph flattens the batch into its cell axis (its Reshapes fix the batch at 1): split it back
        outputs = session.run(None, {input_name: batch})  # type: ignore[attr-defined]
        n = len(batch)
        return [o.reshape(n, -1, o.shape[-1]) for o in outputs]

    def _decode_raw(
        self, outputs: list[np.ndarray], index: int, in_h: int, in_w: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        levels = len(STRIDES)
        all_scores, all_boxes, all_points = [], [], []
        for level, stride in enumerate(STRIDES):
            cls = np.clip(outputs[level][index][:, 0], 0.0, 1.0)
            obj = np.clip(outputs[levels + level][index][:, 0], 0.0, 1.0)
            scores = np.sqrt(cls * obj)
            keep = np.nonzero(scores >= self.score_threshold)[0]
            if keep.size == 0:
                continue
            cols = in_w // stride
            cells = np.stack([keep % cols, keep // cols], axis=1).astype(np.float32)
            raw_box = outputs[2 * levels + level][index][keep]
            raw_kps = outputs[3 * levels + level][index][keep].reshape(-1, 5, 2)
            centre = (cells + raw_box[:, :2]) * stride
            size = np.exp(np.minimum(raw_box[:, 2:4], 10.0)) * stride  # the cap keeps exp finite on junk
            all_scores.append(scores[keep])
            all_boxes.append(np.concatenate([centre - size / 2, centre + size / 2], axis=1))
            all_points.append((cells[:, None, :] + raw_kps) * stride)
        return self._suppress(all_scores, all_boxes, all_points)
