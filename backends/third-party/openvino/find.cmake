# OpenVINO 2026.4.1 from its PyPI wheel (scripts/third-party.sh): the wheel's own CMake package,
# openvino/openvino/cmake/OpenVINOConfig.cmake, defines openvino::runtime over libs/libopenvino.so.2641.
# The CPU plugin is not linked: OpenVINO's Core loads libopenvino_intel_cpu_plugin.so at run time
# from the folder that holds libopenvino.so (the wheel ships no plugins.xml; the plugins are
# registered by file name relative to that folder), so the RPATH to libs/ serves both.
set(_openvino_root ${ATTNCHECK_THIRD_PARTY_DIR}/openvino/openvino)
set(_openvino_libs ${_openvino_root}/libs)
if(NOT EXISTS ${_openvino_libs}/libopenvino_intel_cpu_plugin.so)
  attncheck_third_party_missing(openvino "no ${_openvino_libs}/libopenvino_intel_cpu_plugin.so")
  return()
endif()
find_package(OpenVINO CONFIG QUIET COMPONENTS Runtime PATHS ${_openvino_root}/cmake NO_DEFAULT_PATH)
if(NOT OpenVINO_FOUND OR NOT TARGET openvino::runtime)
  attncheck_third_party_missing(openvino "OpenVINOConfig.cmake under ${_openvino_root}/cmake did not define openvino::runtime")
  return()
endif()

# The adapters link this wrapper rather than the imported target itself: an imported library a
# backend's objects link is recorded for attncheck::backends (backends/CMakeLists.txt,
# _attncheck_backend_link), which must never need OpenVINO; a plain INTERFACE target is not.
add_library(attncheck_openvino_runtime INTERFACE)
target_link_libraries(attncheck_openvino_runtime INTERFACE openvino::runtime)

# The CPU plugin picks its arithmetic by CPU: bf16 by default where AVX512_BF16 is (the README's
# "Measured on this machine"), and other bf16 conversion paths elsewhere (on a CPU without
# AVX-512, openvino-sdpa runs at f32 and openvino-sdpa-f32's bf16 outputs are not rounded once
# from the exact value). The expectations were recorded with AVX512_BF16.
attncheck_add_plugin(openvino-sdpa openvino attncheck_openvino_sdpa_entry LINK attncheck_openvino_runtime RPATH ${_openvino_libs}
                     RECORDED_ON avx512_bf16)
attncheck_add_plugin(openvino-sdpa-f32 openvino attncheck_openvino_sdpa_f32_entry LINK attncheck_openvino_runtime
                     RPATH ${_openvino_libs} RECORDED_ON avx512_bf16)
