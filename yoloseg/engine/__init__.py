"""Engine: the YOLO facade and the task-agnostic train/val/predict/export machinery."""
