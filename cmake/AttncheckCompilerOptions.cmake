# Warning and build-type settings for attncheck's own targets. Third-party headers are included
# as SYSTEM so -Werror applies to our code alone.

# Sanitize: ASan + UBSan with frame pointers, for the test suite and the fuzzers. -O2 rather than
# the customary -O1: the suite is arithmetic-heavy and runs about twice as fast, and ASan reports
# stay exact (it instruments memory accesses, whatever the optimizer keeps).
#
# project() leaves an empty cache entry for the flags of a build type it does not know, and
# set(CACHE) never replaces an existing entry, so these must fill an empty one with FORCE;
# otherwise the Sanitize build silently compiles without sanitizers. A value the user set stays.
function(_attncheck_build_type_flags variable value)
  if("$CACHE{${variable}}" STREQUAL "")
    set(${variable} "${value}" CACHE STRING "Flags for the Sanitize build type" FORCE)
  endif()
endfunction()
set(attncheck_sanitize_flags "-O2 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined")
_attncheck_build_type_flags(CMAKE_CXX_FLAGS_SANITIZE "${attncheck_sanitize_flags}")
_attncheck_build_type_flags(CMAKE_C_FLAGS_SANITIZE "${attncheck_sanitize_flags}")
foreach(kind IN ITEMS EXE SHARED MODULE)
  _attncheck_build_type_flags(CMAKE_${kind}_LINKER_FLAGS_SANITIZE "-fsanitize=address,undefined")
endforeach()

add_library(attncheck_warnings INTERFACE)
target_compile_options(attncheck_warnings INTERFACE
  $<$<COMPILE_LANG_AND_ID:CXX,GNU,Clang>:-Wall -Wextra -Wpedantic -Wshadow -Wno-missing-field-initializers>
  # GCC 12 reports its own AVX-512 intrinsics (`__m256d __Y = __Y;`) as maybe-uninitialized when
  # Eigen inlines them; a false positive in system headers, so it stays a warning.
  $<$<COMPILE_LANG_AND_ID:CXX,GNU>:-Wno-error=maybe-uninitialized -Wno-maybe-uninitialized>
  $<$<COMPILE_LANG_AND_ID:C,GNU,Clang>:-Wall -Wextra -Wpedantic>
  $<$<AND:$<BOOL:${ATTNCHECK_WERROR}>,$<COMPILE_LANG_AND_ID:CXX,GNU,Clang>>:-Werror>
  $<$<AND:$<BOOL:${ATTNCHECK_WERROR}>,$<COMPILE_LANG_AND_ID:C,GNU,Clang>>:-Werror>)
# ATTNCHECK_NATIVE: -march=native for the kernels under test only (backends/, through
# attncheck_native below), for local benchmarking. Everything else — the reference above all,
# whose bits must not depend on the building machine (reference/README.md) — builds for the
# compiler's default target, so an installed attncheck runs on any x86-64-v2 CPU; code that wants
# wider vectors dispatches at run time (the reference's kernels/, cpu-flash).
add_library(attncheck_native INTERFACE)
if(ATTNCHECK_NATIVE)
  include(CheckCXXCompilerFlag)
  check_cxx_compiler_flag(-march=native ATTNCHECK_HAS_MARCH_NATIVE)
  if(ATTNCHECK_HAS_MARCH_NATIVE)
    target_compile_options(attncheck_native INTERFACE $<$<COMPILE_LANGUAGE:CXX,C>:-march=native>)
  endif()
endif()

# attncheck_target(<target>): our warning flags on a target of ours.
# BUILD_INTERFACE: the flags are ours to build with, not something installed targets carry.
function(attncheck_target target)
  target_link_libraries(${target} PRIVATE $<BUILD_INTERFACE:attncheck_warnings>)
endfunction()
