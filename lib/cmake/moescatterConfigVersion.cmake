# SPDX-License-Identifier: MIT
# moescatterConfigVersion.cmake - which find_package(moescatter VERSION)
# requests this installed version satisfies: any earlier or equal version
# of the same major version (structs only grow; programs built against an
# earlier version keep working).
set(PACKAGE_VERSION "0.2.0")
if(PACKAGE_FIND_VERSION_MAJOR STREQUAL "")
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif(NOT PACKAGE_FIND_VERSION_MAJOR STREQUAL "0")
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
endif()
# A 64-bit library cannot serve a 32-bit project, nor the other way.
if(NOT CMAKE_SIZEOF_VOID_P STREQUAL "" AND
   NOT CMAKE_SIZEOF_VOID_P STREQUAL "8")
  set(PACKAGE_VERSION "${PACKAGE_VERSION} (8-byte pointers)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
endif()
