#include "attncheck/layer.h"

#include <Eigen/Dense>
#include <charconv>
#include <fmt/format.h>

#include "kernels/fixed_order.h"

namespace attncheck {
namespace {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using StridedMatrix = Eigen::Map<const RowMatrix, 0, Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>>;
using StridedRowVector = Eigen::Map<const Eigen::RowVectorXd, 0, Eigen::InnerStride<>>;

// The [rows, cols] matrix at (i0, i1) of a 4-d view: its dims 2 and 3 with their strides.
StridedMatrix matrix_at(const View4<const double>& view, std::int64_t i0, std::int64_t i1) {
  return StridedMatrix(&view(i0, i1, 0, 0), view.shape[2], view.shape[3],
                       Eigen::Stride<Eigen::Dynamic, Eigen::Dynamic>(view.strides[2], view.strides[3]));
}

// Row i2 of the matrix at (0, 0): the per-head bias vectors b_Q^(h), b_K^(g), b_V^(g) and b_O.
StridedRowVector bias_row(const View4<const double>& view, std::int64_t i2) {
  return StridedRowVector(&view(0, 0, i2, 0), view.shape[3], Eigen::InnerStride<>(view.strides[3]));
}

void check_shape(std::string_view tensor, const View4<const double>& view, const Shape4& expected,
                 const std::array<std::string_view, 4>& names) {
  if (view.empty()) throw ProblemError(fmt::format("{}: is missing (no data)", tensor));
  for (int d = 0; d < 4; ++d)
    if (view.shape[d] != expected[d])
      throw ProblemError(fmt::format("{}: dim {} ({}) is {}, but the layer expects {} (shape {} vs {})", tensor, d,
                                     names[d], view.shape[d], expected[d], shape_string(view.shape),
                                     shape_string(expected)));
}

void check_absent(std::string_view tensor, const View4<const double>& view, std::string_view because) {
  if (!view.empty()) throw ProblemError(fmt::format("{}: is given, but {}", tensor, because));
}

// Y = X W + b for one batch and head, into the [L, D] slice (b, h) of a compact [B, H, L, D] tensor.
// X W in the fixed order of kernels/fixed_order.h, so the projections are as reproducible as the
// attention; X and W are gathered into row-major copies first (layer cases are small).
void project(const detail::FixedOrderKernels& kernels, const StridedMatrix& x, const StridedMatrix& w,
             const View4<const double>& bias, std::int64_t head, HostTensor& y, std::int64_t b) {
  const RowMatrix x_rows = x, w_rows = w;
  Eigen::Map<RowMatrix> out(&y(b, head, 0, 0), y.shape[2], y.shape[3]);
  kernels.product(x_rows.rows(), w_rows.cols(), x_rows.cols(), x_rows.data(), x_rows.cols(), w_rows.data(),
                  w_rows.cols(), out.data(), out.cols());
  if (!bias.empty()) out.rowwise() += bias_row(bias, head);
}

}  // namespace

void LayerProblem::validate() const {
  attention.validate();
  if (model_dim < 1)
    throw ProblemError(fmt::format("X: dim 3 (model dim) is {}, but must be at least 1", model_dim));
  if (self_attention && attention.q_len != attention.k_len)
    throw ProblemError(fmt::format("X_kv: self-attention projects keys from X, so Lk must equal Lq = {}, but Lk = {}",
                                   attention.q_len, attention.k_len));
  if (key_dim < 0 || value_dim < 0)
    throw ProblemError(fmt::format("X_kv: key width {} and value width {} must be at least 1 (0: d_model)", key_dim, value_dim));
  if (self_attention && (key_dim > 0 || separate_values))
    throw ProblemError("X_kv: self-attention projects keys and values from X itself, so it has no key width or value input");
  if (value_dim > 0 && !separate_values)
    throw ProblemError(fmt::format("X_v: a value width of {} needs values of their own (sepv=1); without, they come from X_kv",
                                   value_dim));
}

std::string LayerProblem::describe() const {
  std::string out = attention.describe() + fmt::format(" dmodel={}", model_dim);
  if (!self_attention) out += " cross=1";
  if (has_qkv_bias) out += " qkvbias=1";
  if (has_out_bias) out += " outbias=1";
  if (key_dim > 0) out += fmt::format(" kdim={}", key_dim);
  if (value_dim > 0) out += fmt::format(" vdim={}", value_dim);
  if (separate_values) out += " sepv=1";
  return out;
}

LayerProblem parse_layer_problem(std::string_view text) {
  LayerProblem layer;
  std::string attention_text;
  std::size_t at = 0;
  while (at < text.size()) {
    const std::size_t token_end = std::min(text.find(' ', at), text.size());
    const std::string_view token = text.substr(at, token_end - at);
    at = token_end + 1;
    const auto flag = [&](std::string_view key) -> std::optional<bool> {
      if (!token.starts_with(key) || token.size() <= key.size() || token[key.size()] != '=') return std::nullopt;
      const std::string_view value = token.substr(key.size() + 1);
      if (value != "0" && value != "1")
        throw ProblemError(fmt::format("problem text: {}={} is not 0 or 1", key, value));
      return value == "1";
    };
    const auto integer = [&](std::string_view key, std::int64_t& into) {
      if (!token.starts_with(key) || token.size() <= key.size() || token[key.size()] != '=') return false;
      const std::string_view value = token.substr(key.size() + 1);
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), into);
      if (ec != std::errc() || end != value.data() + value.size())
        throw ProblemError(fmt::format("problem text: {}={} is not an integer", key, value));
      return true;
    };
    if (integer("dmodel", layer.model_dim) || integer("kdim", layer.key_dim) || integer("vdim", layer.value_dim)) {
    } else if (auto separate = flag("sepv")) {
      layer.separate_values = *separate;
    } else if (auto cross = flag("cross")) {
      layer.self_attention = !*cross;
    } else if (auto qkv = flag("qkvbias")) {
      layer.has_qkv_bias = *qkv;
    } else if (auto out = flag("outbias")) {
      layer.has_out_bias = *out;
    } else if (!token.empty()) {
      attention_text += std::string(token) + " ";
    }
  }
  layer.attention = parse_problem(attention_text);
  return layer;
}

void validate_layer_inputs(const LayerProblem& layer, const LayerInputs& in) {
  layer.validate();
  const Problem& p = layer.attention;
  const std::int64_t d = layer.model_dim;
  check_shape("X", in.x, {1, p.batch, p.q_len, d}, {"unit", "batch", "query length", "model dim"});
  // The key and value inputs are d_model wide unless the layer says otherwise (torch's kdim/vdim);
  // the messages name the width the layer has.
  const std::int64_t dk_in = layer.key_width(), dv_in = layer.value_width();
  const std::string_view key_width = layer.key_dim > 0 ? "key width" : "model dim";
  const std::string_view value_width = layer.value_width() != d || layer.separate_values ? "value width" : key_width;
  if (layer.self_attention)
    check_absent("X_kv", in.x_kv, "the problem is self-attention (keys and values come from X)");
  else
    check_shape("X_kv", in.x_kv, {1, p.batch, p.k_len, dk_in}, {"unit", "batch", "key length", key_width});
  if (layer.separate_values)
    check_shape("X_v", in.x_v, {1, p.batch, p.k_len, dv_in}, {"unit", "batch", "key length", value_width});
  else
    check_absent("X_v", in.x_v, "the problem projects values from X_kv (no sepv=1)");
  check_shape("W_Q", in.w_q, {1, p.q_heads, d, p.qk_dim}, {"unit", "query heads", "model dim", "head dim"});
  check_shape("W_K", in.w_k, {1, p.kv_heads, dk_in, p.qk_dim}, {"unit", "kv heads", key_width, "head dim"});
  check_shape("W_V", in.w_v, {1, p.kv_heads, dv_in, p.v_dim}, {"unit", "kv heads", value_width, "value dim"});
  if (layer.has_qkv_bias) {
    check_shape("b_Q", in.b_q, {1, 1, p.q_heads, p.qk_dim}, {"unit", "unit", "query heads", "head dim"});
    check_shape("b_K", in.b_k, {1, 1, p.kv_heads, p.qk_dim}, {"unit", "unit", "kv heads", "head dim"});
    check_shape("b_V", in.b_v, {1, 1, p.kv_heads, p.v_dim}, {"unit", "unit", "kv heads", "value dim"});
  } else {
    check_absent("b_Q", in.b_q, "the problem has no Q/K/V biases");
    check_absent("b_K", in.b_k, "the problem has no Q/K/V biases");
    check_absent("b_V", in.b_v, "the problem has no Q/K/V biases");
  }
  check_shape("W_O", in.w_o, {1, 1, p.q_heads * p.v_dim, d}, {"unit", "unit", "heads x value dim", "model dim"});
  if (layer.has_out_bias)
    check_shape("b_O", in.b_o, {1, 1, 1, d}, {"unit", "unit", "unit", "model dim"});
  else
    check_absent("b_O", in.b_o, "the problem has no output bias");
  // The mask and key lengths go to the core attention unchanged, so its own check applies; the
  // placeholder views carry the shapes the projections will have (only shapes are checked).
  const View4<const double> q_shape{in.x.data, {p.batch, p.q_heads, p.q_len, p.qk_dim}, {}};
  const View4<const double> k_shape{in.x.data, {p.batch, p.kv_heads, p.k_len, p.qk_dim}, {}};
  const View4<const double> v_shape{in.x.data, {p.batch, p.kv_heads, p.k_len, p.v_dim}, {}};
  validate_inputs(p, {q_shape, k_shape, v_shape, in.mask, in.key_lengths});
}

LayerResult reference_layer(const LayerProblem& layer, const LayerInputs& in, const ReferenceOptions& options) {
  validate_layer_inputs(layer, in);
  const Problem& p = layer.attention;
  const View4<const double>& x_kv = layer.self_attention ? in.x : in.x_kv;
  const View4<const double>& x_v = layer.separate_values ? in.x_v : x_kv;  // torch's value argument
  const detail::FixedOrderKernels& kernels = detail::fixed_order_kernels(options.isa);

  // Each query head has its own W_Q^(h); kv head g's W_K^(g), W_V^(g) serve the Hq/Hkv query heads
  // of its group, so K and V are projected once per kv head (MQA/GQA share them by construction).
  LayerResult result;
  result.q = HostTensor({p.batch, p.q_heads, p.q_len, p.qk_dim});
  result.k = HostTensor({p.batch, p.kv_heads, p.k_len, p.qk_dim});
  result.v = HostTensor({p.batch, p.kv_heads, p.k_len, p.v_dim});
  for (std::int64_t b = 0; b < p.batch; ++b) {
    const StridedMatrix x = matrix_at(in.x, 0, b), xkv = matrix_at(x_kv, 0, b), xv = matrix_at(x_v, 0, b);
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      project(kernels, x, matrix_at(in.w_q, 0, h), in.b_q, h, result.q, b);
    for (std::int64_t g = 0; g < p.kv_heads; ++g) {
      project(kernels, xkv, matrix_at(in.w_k, 0, g), in.b_k, g, result.k, b);
      project(kernels, xv, matrix_at(in.w_v, 0, g), in.b_v, g, result.v, b);
    }
  }
  const HostTensor& q = result.q;
  const HostTensor& k = result.k;
  const HostTensor& v = result.v;
  result.attention = reference_attention(p, {q.view(), k.view(), v.view(), in.mask, in.key_lengths}, options);

  // out = concat(head_0, …, head_{Hq−1}) W_O + b_O: row i of the concatenation is
  // [O(b, 0, i, :), …, O(b, Hq−1, i, :)], heads as contiguous blocks of Dv columns.
  result.out = HostTensor({1, p.batch, p.q_len, layer.model_dim});
  const RowMatrix w_o = matrix_at(in.w_o, 0, 0);
  RowMatrix concat(p.q_len, p.q_heads * p.v_dim);
  for (std::int64_t b = 0; b < p.batch; ++b) {
    for (std::int64_t h = 0; h < p.q_heads; ++h)
      concat.middleCols(h * p.v_dim, p.v_dim) =
          Eigen::Map<const RowMatrix>(&result.attention.out(b, h, 0, 0), p.q_len, p.v_dim);
    Eigen::Map<RowMatrix> out(&result.out(0, b, 0, 0), p.q_len, layer.model_dim);
    kernels.product(concat.rows(), w_o.cols(), concat.cols(), concat.data(), concat.cols(), w_o.data(), w_o.cols(),
                    out.data(), out.cols());
    if (!in.b_o.empty()) out.rowwise() += bias_row(in.b_o, 0);
  }
  return result;
}

}  // namespace attncheck
