#include "attncheck/tensor.h"

#include <fmt/format.h>

namespace attncheck {

Shape4 compact_strides(const Shape4& shape) {
  Shape4 strides{};
  std::int64_t stride = 1;
  for (int d = 3; d >= 0; --d) {
    strides[d] = stride;
    stride *= shape[d];
  }
  return strides;
}

std::int64_t element_count(const Shape4& shape) { return shape[0] * shape[1] * shape[2] * shape[3]; }

std::string shape_string(const Shape4& shape) {
  return fmt::format("[{}, {}, {}, {}]", shape[0], shape[1], shape[2], shape[3]);
}

PermutedTensor to_sequence_major(const View4<const double>& logical) {
  const Shape4& s = logical.shape;
  PermutedTensor result;
  result.storage.resize(static_cast<size_t>(element_count(s)));
  // Memory order [d0, d2, d1, d3]; logical strides point into it.
  const Shape4 memory_strides = compact_strides({s[0], s[2], s[1], s[3]});
  const Shape4 logical_strides{memory_strides[0], memory_strides[2], memory_strides[1], memory_strides[3]};
  for (std::int64_t a = 0; a < s[0]; ++a)
    for (std::int64_t b = 0; b < s[1]; ++b)
      for (std::int64_t c = 0; c < s[2]; ++c)
        for (std::int64_t d = 0; d < s[3]; ++d)
          result.storage[a * logical_strides[0] + b * logical_strides[1] + c * logical_strides[2] + d * logical_strides[3]] =
              logical(a, b, c, d);
  result.view = {result.storage.data(), s, logical_strides};
  return result;
}

}  // namespace attncheck
