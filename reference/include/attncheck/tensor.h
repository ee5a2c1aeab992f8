/// \file tensor.h
/// \brief Owning host tensors and strided 4-d views of them.
///
/// Strides are in elements, as in DLPack. A view can describe [B, H, L, D], [B, L, H, D] or any
/// other layout of the same logical tensor, and a stride of 0 broadcasts (the mask).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

namespace attncheck {

using Shape4 = std::array<std::int64_t, 4>;

/// Row-major strides of a compact tensor of this shape.
Shape4 compact_strides(const Shape4& shape);
/// Number of elements (product of the shape).
std::int64_t element_count(const Shape4& shape);
/// "[2, 8, 17, 64]"
std::string shape_string(const Shape4& shape);

template <class T>
struct View4 {
  T* data = nullptr;
  Shape4 shape{};
  Shape4 strides{};

  T& operator()(std::int64_t i0, std::int64_t i1, std::int64_t i2, std::int64_t i3) const {
    return data[i0 * strides[0] + i1 * strides[1] + i2 * strides[2] + i3 * strides[3]];
  }
  bool empty() const { return data == nullptr; }
  /// A view of mutable data is also a read-only view of it (AttentionInputs takes those).
  operator View4<const T>() const
    requires(!std::is_const_v<T>)
  {
    return {data, shape, strides};
  }
};

/// A compact row-major tensor of doubles, the currency of the reference.
struct HostTensor {
  Shape4 shape{};
  std::vector<double> values;

  HostTensor() = default;
  explicit HostTensor(const Shape4& s, double fill = 0.0) : shape(s), values(static_cast<size_t>(element_count(s)), fill) {}

  View4<double> view() { return {values.data(), shape, compact_strides(shape)}; }
  View4<const double> view() const { return {values.data(), shape, compact_strides(shape)}; }
  double& operator()(std::int64_t i0, std::int64_t i1, std::int64_t i2, std::int64_t i3) { return view()(i0, i1, i2, i3); }
  double operator()(std::int64_t i0, std::int64_t i1, std::int64_t i2, std::int64_t i3) const { return view()(i0, i1, i2, i3); }
};

/// The same data laid out with axes 1 and 2 swapped in memory ([B, L, H, D] for a [B, H, L, D]
/// logical tensor): storage holds the permuted tensor, the returned view keeps logical order.
struct PermutedTensor {
  std::vector<double> storage;
  View4<const double> view;
};
PermutedTensor to_sequence_major(const View4<const double>& logical);

}  // namespace attncheck
