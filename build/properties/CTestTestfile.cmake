# CMake generated Testfile for 
# Source directory: /work/main/properties
# Build directory: /work/main/build/properties
# 
# This file includes the relevant testing commands required for 
# testing this directory and lists subdirectories to be tested as well.
