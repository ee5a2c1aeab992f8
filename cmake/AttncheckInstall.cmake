# Install rules and the CMake package `attncheck`, so that another project's CI can write
#
#   find_package(attncheck 0.1 REQUIRED)
#   add_library(my_kernel MODULE my_kernel.cpp)
#   target_link_libraries(my_kernel PRIVATE attncheck::abi)
#   attncheck_add_conformance_test(NAME my_kernel BACKEND my_kernel)
#
# Included from the top-level CMakeLists.txt after every folder, because install(TARGETS) needs
# the targets to exist. Exported: attncheck::abi (header-only, with dlpack), attncheck::reference,
# attncheck::numerics, attncheck::backends, attncheck::harness, attncheck::engine,
# attncheck::fixture_format (read and write fixture files; needs only the reference),
# attncheck::fixtures (golden generation and verification) and the attncheck::attncheck executable; attncheckFunctions.cmake (attncheck_add_conformance_test) comes with the config.
#
# As with the tests and tools, the rules default ON only when attncheck is the top-level project
# (fmt's FMT_INSTALL), so add_subdirectory(attncheck) installs nothing into its parent's prefix.
include_guard(GLOBAL)
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

option(ATTNCHECK_INSTALL "attncheck: generate the install rules and the CMake package" ${ATTNCHECK_IS_TOP_LEVEL})
if(NOT ATTNCHECK_INSTALL)
  return()
endif()

set(ATTNCHECK_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/attncheck"
    CACHE STRING "attncheck: where attncheckConfig.cmake is installed, relative to the prefix")

set(attncheck_exported_libraries attncheck_abi attncheck_reference attncheck_numerics attncheck_backends
                                 attncheck_harness attncheck_diagnosis attncheck_engine attncheck_fixture_format attncheck_fixtures)
foreach(target IN LISTS attncheck_exported_libraries)
  if(NOT TARGET ${target})
    message(FATAL_ERROR "attncheck install: target ${target} does not exist; include(AttncheckInstall) after "
                        "every add_subdirectory() in the top-level CMakeLists.txt")
  endif()
endforeach()

install(TARGETS ${attncheck_exported_libraries}
  EXPORT attncheckTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
if(TARGET attncheck)
  install(TARGETS attncheck EXPORT attncheckTargets RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()

# Every public header sits in <folder>/include/attncheck/; they install side by side.
foreach(folder IN ITEMS reference numerics backends harness diagnosis properties fixtures)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${folder}/include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
          FILES_MATCHING PATTERN "*.h" PATTERN "*.hpp")
endforeach()

install(EXPORT attncheckTargets NAMESPACE attncheck:: DESTINATION ${ATTNCHECK_INSTALL_CMAKEDIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/attncheckConfig.cmake.in
  ${PROJECT_BINARY_DIR}/attncheckConfig.cmake
  INSTALL_DESTINATION ${ATTNCHECK_INSTALL_CMAKEDIR})
# SameMajorVersion, as dlpack: the plug-in ABI and the report schema change only with the major.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/attncheckConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMajorVersion)
install(FILES ${PROJECT_BINARY_DIR}/attncheckConfig.cmake ${PROJECT_BINARY_DIR}/attncheckConfigVersion.cmake
              ${PROJECT_SOURCE_DIR}/cmake/attncheckFunctions.cmake
        DESTINATION ${ATTNCHECK_INSTALL_CMAKEDIR})

# attncheck.pc: the include line for plug-ins built without CMake (tools/README.md). The ABI
# version is read from backend.h so the two cannot disagree. The file's prefix is the one this
# build installs to; `cmake --install --prefix P` elsewhere rewrites it at install time.
file(STRINGS ${PROJECT_SOURCE_DIR}/backends/include/attncheck/backend.h attncheck_abi_lines
     REGEX "^#define ATTNCHECK_ABI_VERSION_(MAJOR|MINOR) ")
string(REGEX REPLACE ".*MAJOR ([0-9]+).*MINOR ([0-9]+).*" "\\1.\\2" ATTNCHECK_ABI_VERSION "${attncheck_abi_lines}")
get_target_property(attncheck_dlpack_includes dlpack::dlpack INTERFACE_INCLUDE_DIRECTORIES)
set(ATTNCHECK_PC_DLPACK_CFLAGS "")
foreach(dir IN LISTS attncheck_dlpack_includes)
  if(NOT dir STREQUAL "/usr/include")
    string(APPEND ATTNCHECK_PC_DLPACK_CFLAGS " -I${dir}")
  endif()
endforeach()
# attncheck-fixture-format.pc: compile and link flags for tools that read or write fixture files
# (attncheck::fixture_format and the reference, static) without CMake.
foreach(pc IN ITEMS attncheck attncheck-fixture-format)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/${pc}.pc.in ${PROJECT_BINARY_DIR}/${pc}.pc.in.configured @ONLY)
  install(CODE "
    file(READ \"${PROJECT_BINARY_DIR}/${pc}.pc.in.configured\" content)
    string(REPLACE \"prefix=${CMAKE_INSTALL_PREFIX}\" \"prefix=\${CMAKE_INSTALL_PREFIX}\" content \"\${content}\")
    file(WRITE \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig/${pc}.pc\" \"\${content}\")
    message(STATUS \"Installing: \$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_LIBDIR}/pkgconfig/${pc}.pc\")
  ")
endforeach()

# The package test lives here, beside the rules it checks: it installs this build into a fresh
# prefix, builds tools/examples/external-kernel against it, and expects its conformance test to
# pass, then to fail with the planted bug. Slow (two configure-and-builds), hence its own label.
if(ATTNCHECK_BUILD_TESTS AND ATTNCHECK_BUILD_TOOLS)
  add_test(NAME attncheck.package.external-kernel
           COMMAND ${CMAKE_COMMAND} -E env CMAKE_GENERATOR=${CMAKE_GENERATOR}
                   bash ${PROJECT_SOURCE_DIR}/tools/examples/external-kernel/check.sh
                   ${PROJECT_BINARY_DIR} ${PROJECT_BINARY_DIR}/package-check)
  set_tests_properties(attncheck.package.external-kernel PROPERTIES LABELS "package" TIMEOUT 1200
                       RUN_SERIAL ON)
endif()
