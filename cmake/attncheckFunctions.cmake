# attncheck_add_conformance_test: gate a kernel's CI on the attncheck suite.
#
#   attncheck_add_conformance_test(NAME <test-name> BACKEND <target-or-path>
#                                  [PROFILE quick|standard|exhaustive] [REQUIRE_BACKEND]
#                                  [JUNIT <file>] [LABELS <label>...] [ARGS <extra attncheck run args>...])
#
# Registers a CTest test that runs
#   attncheck run --backend <plug-in> --profile <PROFILE> --junit <JUNIT> <ARGS...>
# where <plug-in> is $<TARGET_FILE:BACKEND> when BACKEND is a target (a MODULE library exporting
# attncheck_backend_entry) and BACKEND itself otherwise (a path or a built-in name). The test
# passes when `attncheck run` exits 0 (every unit passed or was skipped), fails on a conformance
# failure (1) or a usage or load error (2). REQUIRE_BACKEND passes --require-backend, so a run that
# skipped everything (no GPU, say) fails instead of passing. JUNIT defaults to
# <current binary dir>/<NAME>.junit.xml.
#
# Works with an installed package (find_package(attncheck)) and inside attncheck's own build,
# where attncheck::attncheck is an alias of the in-tree executable.
include_guard(DIRECTORY)

# Including this file (find_package(attncheck) does) enables CTest in the including directory and
# its subdirectories, so a project needs no enable_testing() line of its own. It cannot happen
# inside the function: enable_testing() records a variable, which would die with the function's scope.
enable_testing()

function(attncheck_add_conformance_test)
  cmake_parse_arguments(PARSE_ARGV 0 arg "REQUIRE_BACKEND" "NAME;BACKEND;PROFILE;JUNIT" "ARGS;LABELS")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "attncheck_add_conformance_test: unexpected arguments: ${arg_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT arg_NAME OR NOT arg_BACKEND)
    message(FATAL_ERROR "attncheck_add_conformance_test: NAME and BACKEND are required")
  endif()
  if(NOT TARGET attncheck::attncheck)
    message(FATAL_ERROR "attncheck_add_conformance_test(${arg_NAME}): no attncheck::attncheck executable; "
                        "find_package(attncheck) first")
  endif()
  if(NOT arg_PROFILE)
    set(arg_PROFILE quick)
  endif()
  if(NOT arg_PROFILE MATCHES "^(quick|standard|exhaustive)$")
    message(FATAL_ERROR "attncheck_add_conformance_test(${arg_NAME}): PROFILE ${arg_PROFILE} is not quick, standard or exhaustive")
  endif()
  if(NOT arg_JUNIT)
    set(arg_JUNIT ${CMAKE_CURRENT_BINARY_DIR}/${arg_NAME}.junit.xml)
  endif()
  if(TARGET ${arg_BACKEND})
    set(backend $<TARGET_FILE:${arg_BACKEND}>)
  else()
    set(backend ${arg_BACKEND})
  endif()
  set(require "")
  if(arg_REQUIRE_BACKEND)
    set(require --require-backend)
  endif()

  add_test(NAME ${arg_NAME}
           COMMAND $<TARGET_FILE:attncheck::attncheck> run --backend ${backend} --profile ${arg_PROFILE}
                   --junit ${arg_JUNIT} ${require} ${arg_ARGS})
  set_tests_properties(${arg_NAME} PROPERTIES LABELS "attncheck;${arg_LABELS}")
endfunction()
