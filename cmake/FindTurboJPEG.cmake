# FindTurboJPEG — libjpeg-turbo: both its libjpeg API (jpeglib.h, via CMake's FindJPEG) and the
# TurboJPEG API (turbojpeg.h). Defines TurboJPEG_FOUND and TurboJPEG::TurboJPEG (both libraries).
find_package(JPEG QUIET)
find_path(TurboJPEG_INCLUDE_DIR turbojpeg.h)
find_library(TurboJPEG_LIBRARY NAMES turbojpeg)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(TurboJPEG REQUIRED_VARS TurboJPEG_LIBRARY TurboJPEG_INCLUDE_DIR JPEG_LIBRARIES)
if(TurboJPEG_FOUND AND NOT TARGET TurboJPEG::TurboJPEG)
  add_library(TurboJPEG::TurboJPEG INTERFACE IMPORTED)
  target_include_directories(TurboJPEG::TurboJPEG INTERFACE ${TurboJPEG_INCLUDE_DIR} ${JPEG_INCLUDE_DIRS})
  target_link_libraries(TurboJPEG::TurboJPEG INTERFACE ${TurboJPEG_LIBRARY} ${JPEG_LIBRARIES})
endif()
mark_as_advanced(TurboJPEG_INCLUDE_DIR TurboJPEG_LIBRARY)
