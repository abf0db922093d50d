# FindTurboJPEG — libjpeg-turbo: both its libjpeg API (jpeglib.h, via CMake's FindJPEG) and the
# TurboJPEG API (turbojpeg.h). Defines TurboJPEG_FOUND and TurboJPEG::TurboJPEG (both libraries).
find_package(JPEG QUIET)
find_path(TurboJPEG_INCLUDE_DIR turbojpeg.h)
# Debian keeps jpeglib.h's jconfig.h (JPEG_LIB_VERSION) in the multiarch folder. Take the one
# beside the jpeglib.h found, ahead of the system's: with libjpeg-turbo unpacked under a prefix
# on a machine whose own jconfig.h is another version (Ubuntu's libjpeg-turbo8: 80 against
# Debian's 62), the mix compiles and then fails at run time ("Wrong JPEG library version").
if(JPEG_INCLUDE_DIRS)
  find_path(TurboJPEG_JCONFIG_DIR jconfig.h HINTS ${JPEG_INCLUDE_DIRS}
            PATH_SUFFIXES ${CMAKE_LIBRARY_ARCHITECTURE} NO_DEFAULT_PATH)
endif()
find_library(TurboJPEG_LIBRARY NAMES turbojpeg)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TurboJPEG REQUIRED_VARS TurboJPEG_LIBRARY TurboJPEG_INCLUDE_DIR JPEG_LIBRARIES)
if(TurboJPEG_FOUND AND NOT TARGET TurboJPEG::TurboJPEG)
  add_library(TurboJPEG::TurboJPEG INTERFACE IMPORTED)
  target_include_directories(TurboJPEG::TurboJPEG INTERFACE ${TurboJPEG_JCONFIG_DIR} ${TurboJPEG_INCLUDE_DIR}
                             ${JPEG_INCLUDE_DIRS})
  target_link_libraries(TurboJPEG::TurboJPEG INTERFACE ${TurboJPEG_LIBRARY} ${JPEG_LIBRARIES})
endif()
mark_as_advanced(TurboJPEG_INCLUDE_DIR TurboJPEG_JCONFIG_DIR TurboJPEG_LIBRARY)
