"""`resgraph import`: existing networks (torch modules, ONNX files, Caffe prototxts) to specs."""
