# PyTorch (libtorch from the torch wheel scripts/third-party.sh unpacked): three adapters, one per
# entry point of its CPU attention (README.md here).
set(_torch_root ${ATTNCHECK_THIRD_PARTY_DIR}/torch/torch)
set(_torch_libs ${_torch_root}/lib)
# libtorch_cpu loads these itself at start-up (its DT_NEEDED); no GPU is used.
set(_torch_cuda_runtime ${ATTNCHECK_THIRD_PARTY_DIR}/nvidia-cuda-runtime/nvidia/cu13/lib)
set(_torch_cupti ${ATTNCHECK_THIRD_PARTY_DIR}/nvidia-cuda-cupti/nvidia/cu13/lib)
if(NOT EXISTS ${_torch_libs}/libtorch_cpu.so OR NOT EXISTS ${_torch_libs}/libc10.so)
  attncheck_third_party_missing(torch "no libtorch_cpu.so and libc10.so in ${_torch_libs}")
  return()
endif()
if(NOT EXISTS ${_torch_root}/include/ATen/ATen.h)
  attncheck_third_party_missing(torch "no ATen headers in ${_torch_root}/include")
  return()
endif()
if(NOT EXISTS ${_torch_cuda_runtime}/libcudart.so.13 OR NOT EXISTS ${_torch_cupti}/libcupti.so.13)
  attncheck_third_party_missing(torch "libtorch_cpu needs libcudart.so.13 and libcupti.so.13 (nvidia-cuda-runtime, nvidia-cuda-cupti)")
  return()
endif()

# Imported targets for the two libraries the adapters call, headers as SYSTEM (their warnings are
# not ours), behind one plain INTERFACE target: backends/CMakeLists.txt hands an IMPORTED library
# named in a backend's LINK on to attncheck::backends as well, and torch must stay out of it.
if(NOT TARGET attncheck_torch)
  add_library(attncheck_torch_c10 SHARED IMPORTED GLOBAL)
  set_target_properties(attncheck_torch_c10 PROPERTIES IMPORTED_LOCATION ${_torch_libs}/libc10.so)
  add_library(attncheck_torch_cpu SHARED IMPORTED GLOBAL)
  set_target_properties(attncheck_torch_cpu PROPERTIES IMPORTED_LOCATION ${_torch_libs}/libtorch_cpu.so)
  add_library(attncheck_torch INTERFACE)
  target_include_directories(attncheck_torch SYSTEM INTERFACE ${_torch_root}/include)
  target_link_libraries(attncheck_torch INTERFACE attncheck_torch_cpu attncheck_torch_c10)
  # DT_RPATH, not DT_RUNPATH: a RUNPATH serves only the module's own dependencies, and
  # libcudart/libcupti are libtorch_cpu's (it has no RUNPATH of its own). With a RUNPATH the loader
  # would take whatever copy the system has, or fail where it has none.
  target_link_options(attncheck_torch INTERFACE "LINKER:--disable-new-dtags")
endif()
set(_torch_rpath ${_torch_libs} ${_torch_cuda_runtime} ${_torch_cupti})

attncheck_add_plugin(torch-sdpa torch attncheck_torch_sdpa_entry LINK attncheck_torch RPATH ${_torch_rpath})
attncheck_add_plugin(torch-flash-cpu torch attncheck_torch_flash_cpu_entry LINK attncheck_torch RPATH ${_torch_rpath})
attncheck_add_plugin(torch-math torch attncheck_torch_math_entry LINK attncheck_torch RPATH ${_torch_rpath})

# The backward pass of the three adapters on hand-derived two-key cases, their declarations and
# determinism (tests/torch_backward_test.cpp); the plug-ins are loaded by path, torch stays out
# of the test's own link. torch_backward_measure: the adapters' gradients against the double
# reference over a grid of options, and the benchmark of the backward beside the forward (not a
# test: README.md here quotes its output).
if(ATTNCHECK_BUILD_TESTS)
  set(_torch_plugin_paths
    ATTNCHECK_PLUGIN_TORCH_SDPA="$<TARGET_FILE:attncheck_plugin_torch_sdpa>"
    ATTNCHECK_PLUGIN_TORCH_FLASH_CPU="$<TARGET_FILE:attncheck_plugin_torch_flash_cpu>"
    ATTNCHECK_PLUGIN_TORCH_MATH="$<TARGET_FILE:attncheck_plugin_torch_math>")
  add_executable(torch_backward_tests ${CMAKE_CURRENT_SOURCE_DIR}/tests/torch_backward_test.cpp)
  target_link_libraries(torch_backward_tests PRIVATE attncheck::backends attncheck::reference GTest::gtest_main)
  target_compile_definitions(torch_backward_tests PRIVATE ${_torch_plugin_paths})
  add_dependencies(torch_backward_tests attncheck_plugin_torch_sdpa attncheck_plugin_torch_flash_cpu attncheck_plugin_torch_math)
  attncheck_target(torch_backward_tests)
  add_test(NAME third-party.torch.backward COMMAND torch_backward_tests)
  add_executable(torch_backward_measure ${CMAKE_CURRENT_SOURCE_DIR}/tests/torch_backward_measure.cpp)
  target_link_libraries(torch_backward_measure PRIVATE attncheck::harness attncheck::backends attncheck::reference attncheck::numerics)
  target_compile_definitions(torch_backward_measure PRIVATE ${_torch_plugin_paths})
  add_dependencies(torch_backward_measure attncheck_plugin_torch_sdpa attncheck_plugin_torch_flash_cpu attncheck_plugin_torch_math)
  attncheck_target(torch_backward_measure)
endif()
