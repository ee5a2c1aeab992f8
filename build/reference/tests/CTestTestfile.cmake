# CMake generated Testfile for 
# Source directory: /work/main/reference/tests
# Build directory: /work/main/build/reference/tests
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
include("/work/main/build/reference/tests/reference_tests[1]_include.cmake")
