# The project on NVIDIA's TensorRT container: TensorRT 10 with its BERT plugins, CUDA 12, the builders, the runtimes
# and the C++ infer_c module and perf executable.
#
#   docker build -t bert-qa .
#   docker run --gpus all -it --rm -v $PWD/models:/workspace/bert-qa/models bert-qa
#
# 25.06 carries TensorRT 10.11 (the version demoBERT's README names) on CUDA 12.9. Any 10.x release works; TensorRT
# 11 has no BERT plugins (the builders then make a plugin-free network). Another base:
#   docker build --build-arg BASE_IMAGE=nvcr.io/nvidia/tensorrt:<yy.mm>-py3 -t bert-qa .
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:25.06-py3
FROM ${BASE_IMAGE}

ENV PIP_BREAK_SYSTEM_PACKAGES=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /workspace/bert-qa
COPY . .

# The image's own TensorRT serves the tensorrt extra; cuda-python has to match its CUDA 12, and CMake and pybind11
# build infer_c (CMakeLists.txt finds TensorRT's headers and libraries in the image's system folders).
RUN python3 -m pip install "cuda-python>=12,<13" "cmake>=3.18" pybind11 \
 && python3 -m pip install -e ".[tensorrt]" \
 && cmake -S . -B build \
 && cmake --build build -j

CMD ["bash"]
