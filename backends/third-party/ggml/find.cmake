# ggml (the CPU backend of ggml 0.15.3, built shared by scripts/third-party.sh): imported targets
# for libggml-base (tensors, graphs, fp16/bf16 conversion), libggml-cpu (the kernels, among them
# flash_attn_ext) and libggml, then one plug-in per K/V type and precision (README.md here).
#
# The installed ggml-config.cmake is not used: it re-derives the build's options and, for a
# GGML_NATIVE build, expects the compiler checks of the machine that built it. The three
# libraries and the include folder are all an adapter needs.
set(_ggml_root "${ATTNCHECK_THIRD_PARTY_DIR}/ggml/install")
set(_ggml_libs "")
foreach(_ggml_lib ggml-base ggml-cpu ggml)
  set(_ggml_file "${_ggml_root}/lib/lib${_ggml_lib}.so")
  if(NOT EXISTS "${_ggml_file}")
    attncheck_third_party_missing(ggml "no ${_ggml_file}")
    return()
  endif()
  list(APPEND _ggml_libs "${_ggml_file}")
endforeach()
if(NOT EXISTS "${_ggml_root}/include/ggml.h" OR NOT EXISTS "${_ggml_root}/include/ggml-cpu.h")
  attncheck_third_party_missing(ggml "no ggml.h and ggml-cpu.h in ${_ggml_root}/include")
  return()
endif()

foreach(_ggml_lib ggml-base ggml-cpu ggml)
  if(NOT TARGET attncheck_third_party::${_ggml_lib})
    add_library(attncheck_third_party::${_ggml_lib} SHARED IMPORTED)
    set_target_properties(attncheck_third_party::${_ggml_lib} PROPERTIES
      IMPORTED_LOCATION "${_ggml_root}/lib/lib${_ggml_lib}.so"
      INTERFACE_INCLUDE_DIRECTORIES "${_ggml_root}/include")
  endif()
endforeach()
# One non-imported INTERFACE target in front of them: attncheck_add_plugin's object library hands
# every imported library of its LINK on to attncheck::backends (backends/CMakeLists.txt,
# _attncheck_backend_link), and the command line must never link ggml.
if(NOT TARGET attncheck_ggml_libraries)
  add_library(attncheck_ggml_libraries INTERFACE)
  target_link_libraries(attncheck_ggml_libraries INTERFACE
    attncheck_third_party::ggml-cpu attncheck_third_party::ggml-base attncheck_third_party::ggml)
endif()
set(_ggml_link attncheck_ggml_libraries)

attncheck_add_plugin(ggml-fa-f32kv ggml attncheck_ggml_fa_f32kv_entry LINK ${_ggml_link} RPATH ${_ggml_root}/lib)
attncheck_add_plugin(ggml-fa-f16kv ggml attncheck_ggml_fa_f16kv_entry LINK ${_ggml_link} RPATH ${_ggml_root}/lib)
attncheck_add_plugin(ggml-fa-f16kv-prec-f32 ggml attncheck_ggml_fa_f16kv_prec_f32_entry LINK ${_ggml_link} RPATH ${_ggml_root}/lib)
attncheck_add_plugin(ggml-fa-bf16kv ggml attncheck_ggml_fa_bf16kv_entry LINK ${_ggml_link} RPATH ${_ggml_root}/lib)
