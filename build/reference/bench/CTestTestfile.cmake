# CMake generated Testfile for 
# Source directory: /work/main/reference/bench
# Build directory: /work/main/build/reference/bench
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
