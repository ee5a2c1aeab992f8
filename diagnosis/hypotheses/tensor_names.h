// The tensor names of the harness's memory findings (execute.cpp), and how a statement spells them.
#pragma once

#include <array>
#include <string>
#include <string_view>

namespace attncheck::diagnosis {

inline constexpr std::array<std::string_view, 7> kTensorNames = {"out", "lse", "Q", "K", "V", "mask", "key_lengths"};

inline std::string display_name(std::string_view tensor) {
  if (tensor == "out") return "O";
  if (tensor == "lse") return "LSE";
  return std::string(tensor);
}

}  // namespace attncheck::diagnosis
