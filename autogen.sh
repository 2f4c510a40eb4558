#!/bin/sh
# SPDX-License-Identifier: MIT
# Generates configure and the Makefile.in files in a git checkout.
set -e
cd "$(dirname "$0")"
mkdir -p m4 build-aux
autoreconf -fi
