// The Python module `infer_c` (upstream's interface, spec §7.1):
//
//   bert = infer_c.bert_inf(engine_path, max_batch_size, max_seq_length, enable_graph)
//   bert.prepare(batch_size)
//   logits = bert.run(input_ids, segment_ids, input_mask)   # float32 (B, S, 2, 1, 1); varlen engines (2*B*S,)
//   logits = bert.run_packed(input_ids, segment_ids, cu_seqlens)   # float32 (2, T)
//   bert.times, bert.clear_times(), bert.benchmark(...)
//   infer_c.engine_info(path) -> dict
//
// Errors are one-line RuntimeErrors.
#include "bert_infer.h"
#include "trt_backend.h"

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace py = pybind11;

namespace
{

using Int32Array = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

// Integer (or bool) array-likes as contiguous int32. Floats are refused: casting would truncate them silently.
Int32Array asInt32(const py::handle& object, const std::string& name)
{
    py::array array = py::array::ensure(object);
    if (!array)
    {
        throw std::runtime_error(name + " must be an integer array");
    }
    const char kind = array.dtype().kind();
    if (kind != 'i' && kind != 'u' && kind != 'b')
    {
        throw std::runtime_error(name + " must hold integers, not " + std::string(py::str(array.dtype())));
    }
    if (array.itemsize() > 4 && array.size() > 0)
    {
        const long long low = array.attr("min")().cast<long long>();
        const long long high = array.attr("max")().cast<long long>();
        if (low < std::numeric_limits<int32_t>::min() || high > std::numeric_limits<int32_t>::max())
        {
            throw std::runtime_error(name + " holds values outside int32");
        }
    }
    return Int32Array::ensure(array);
}

std::string shapeText(const py::array& array)
{
    std::string text = "(";
    for (py::ssize_t i = 0; i < array.ndim(); ++i)
    {
        text += (i ? ", " : "") + std::to_string(array.shape(i));
    }
    return text + (array.ndim() == 1 ? ",)" : ")");
}

py::array_t<float> toNumpy(const std::vector<float>& values, const std::vector<py::ssize_t>& shape)
{
    py::array_t<float> array(shape);
    std::copy(values.begin(), values.end(), array.mutable_data());
    return array;
}

py::array_t<float> run(bert::BertInference& bert, const py::handle& ids, const py::handle& segs, const py::handle& mask)
{
    const Int32Array i = asInt32(ids, "input_ids");
    const Int32Array s = asInt32(segs, "segment_ids");
    const Int32Array m = asInt32(mask, "input_mask");
    const auto sameShape = [](const py::array& a, const py::array& b) {
        return a.ndim() == b.ndim() && std::equal(a.shape(), a.shape() + a.ndim(), b.shape());
    };
    if (!sameShape(i, s) || !sameShape(i, m))
    {
        throw std::runtime_error("input_ids, segment_ids and input_mask must have one shape, got " + shapeText(i) + ", "
            + shapeText(s) + " and " + shapeText(m));
    }
    const py::ssize_t S = bert.seqLength();
    if (i.size() == 0 || i.size() % S != 0 || (i.ndim() >= 2 && i.shape(i.ndim() - 1) != S))
    {
        throw std::runtime_error("inputs must be (batch, " + std::to_string(S) + ") for this bert_inf, got "
            + shapeText(i));
    }
    const int batch = static_cast<int>(i.size() / S);
    std::vector<float> logits;
    {
        py::gil_scoped_release release;
        logits = bert.run(i.data(), s.data(), m.data(), batch);
    }
    if (bert.variableSeqlen())
    {
        return toNumpy(logits, {2 * batch * S});
    }
    return toNumpy(logits, {batch, S, 2, 1, 1});
}

py::array_t<float> runPacked(
    bert::BertInference& bert, const py::handle& ids, const py::handle& segs, const py::handle& cuSeqlens)
{
    const Int32Array i = asInt32(ids, "input_ids");
    const Int32Array s = asInt32(segs, "segment_ids");
    const Int32Array cu = asInt32(cuSeqlens, "cu_seqlens");
    if (i.ndim() != 1 || s.ndim() != 1 || cu.ndim() != 1 || i.size() != s.size())
    {
        throw std::runtime_error("packed input_ids and segment_ids must be one 1-D length and cu_seqlens 1-D, got "
            + shapeText(i) + ", " + shapeText(s) + " and " + shapeText(cu));
    }
    if (cu.size() < 2)
    {
        throw std::runtime_error("cu_seqlens needs at least 2 entries (one sequence)");
    }
    const int sequences = static_cast<int>(cu.size() - 1);
    std::vector<float> logits;
    {
        py::gil_scoped_release release;
        logits = bert.runPacked(i.data(), s.data(), static_cast<size_t>(i.size()), cu.data(), sequences);
    }
    return toNumpy(logits, {2, i.size()});
}

py::list profilesList(const std::vector<bert::ProfileRange>& profiles)
{
    py::list list;
    for (const bert::ProfileRange& p : profiles)
    {
        py::dict d;
        d["batch"] = py::make_tuple(p.batch[0], p.batch[1], p.batch[2]);
        d["seq"] = py::make_tuple(p.seq[0], p.seq[1], p.seq[2]);
        list.append(d);
    }
    return list;
}

py::dict engineInfo(const std::string& path)
{
    const bert::EngineSummary summary = bert::describeEngine(path);
    py::dict info;
    info["kind"] = summary.kind;
    info["variable_seqlen"] = summary.variableSeqlen;
    info["precision"] = summary.precision;
    info["profiles"] = profilesList(summary.profiles);
    info["header"] = summary.header;
    return info;
}

} // namespace

PYBIND11_MODULE(infer_c, m)
{
    m.doc() = "BERT QA inference in C++ with CUDA graphs: native engines (own CUDA kernels + cuBLAS) and, "
              "when built with TensorRT, TensorRT plans";
    m.attr("has_tensorrt") = bert::builtWithTensorRT();
    m.attr("tensorrt_version") = bert::tensorRTBuildVersion();
    m.def("engine_info", &engineInfo, py::arg("engine_path"),
        "kind ('native'/'tensorrt'), variable_seqlen, precision, profiles and (native) the JSON header of an engine");

    py::class_<bert::BertInference>(m, "bert_inf")
        .def(py::init<const std::string&, int, int, bool>(), py::arg("engine_path"), py::arg("max_batch_size"),
            py::arg("max_seq_length"), py::arg("enable_graph") = false)
        .def("prepare", &bert::BertInference::prepare, py::arg("batch_size"),
            "select the profile and shapes for this batch size (and capture the CUDA graph when enabled)",
            py::call_guard<py::gil_scoped_release>())
        .def("run", &run, py::arg("input_ids"), py::arg("segment_ids"), py::arg("input_mask"),
            "padded (batch, S) int inputs -> float32 logits (batch, S, 2, 1, 1), or (2*batch*S,) for a variable-length "
            "engine (start logits, then end logits)")
        .def("run_packed", &runPacked, py::arg("input_ids"), py::arg("segment_ids"), py::arg("cu_seqlens"),
            "packed (T,) int inputs with cu_seqlens (B+1,) -> float32 logits (2, T)")
        .def("benchmark", &bert::BertInference::benchmark, py::arg("batch_size"), py::arg("warm_up_runs") = 10,
            py::arg("iterations") = 200, py::arg("duration") = 0.0, py::arg("random_seed") = 12345u,
            "perf's loop on random full-length inputs: GPU milliseconds of each timed iteration",
            py::call_guard<py::gil_scoped_release>())
        .def_property_readonly("times", &bert::BertInference::times, "milliseconds of each run()/run_packed()")
        .def("clear_times", &bert::BertInference::clearTimes)
        .def_property_readonly("kind", &bert::BertInference::kind)
        .def_property_readonly("variable_seqlen", &bert::BertInference::variableSeqlen)
        .def_property_readonly("max_batch_size", &bert::BertInference::maxBatchSize)
        .def_property_readonly("max_seq_length", &bert::BertInference::seqLength)
        .def_property_readonly("enable_graph", &bert::BertInference::graphEnabled)
        .def_property_readonly("batch_size", &bert::BertInference::batchSize, "the prepared batch size (0: none)");
}
