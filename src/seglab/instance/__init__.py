"""Instance segmentation: Mask R-CNN and a boundary-aware U-Net with marker watershed.

* :mod:`.data` reads instance maps (+ class per instance) of the dsb2018 and COCO formats;
* :mod:`.targets` turns instance maps into training targets;
* :mod:`.watershed` recovers instances from interior / boundary probabilities;
* :mod:`.maskrcnn` builds torchvision's Mask R-CNN (ResNet-50-FPN, MobileNetV3-Large-FPN);
* :mod:`.metrics` computes COCO mask / box AP (pycocotools), the DSB2018 metric and counts;
* :mod:`.task` is the LightningModule and the one instance inference path;
* :mod:`.run` holds ``train``, ``evaluate`` and ``predict`` for ``task: instance``.
"""
