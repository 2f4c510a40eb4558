# SPDX-License-Identifier: MIT
"""Turns pytest's JUnit XML report into TAP for automake's test driver.

Usage: tap_from_junit.py REPORT PYTEST_EXIT_STATUS
"""
import sys
import xml.etree.ElementTree as ET


def failed_case(case):
    return case.find("failure") is not None or \
        case.find("error") is not None


def main():
    report, status = sys.argv[1], int(sys.argv[2])
    try:
        cases = list(ET.parse(report).getroot().iter("testcase"))
    except (OSError, ET.ParseError) as e:
        print("Bail out! pytest wrote no report (exit status %d): %s"
              % (status, e))
        return
    print("1..%d" % len(cases))
    for n, case in enumerate(cases, 1):
        name = "%s::%s" % (case.get("classname", ""), case.get("name", ""))
        name = name.replace("#", "_")
        failed = failed_case(case)
        skipped = case.find("skipped")
        if failed:
            print("not ok %d %s" % (n, name))
        elif skipped is not None:
            reason = (skipped.get("message") or "skipped").replace("\n", " ")
            print("ok %d %s # SKIP %s" % (n, name, reason))
        else:
            print("ok %d %s" % (n, name))
    # A crash after the last test, or a collection error, leaves every
    # listed test passing: the exit status still fails the run.
    if status not in (0, 1, 5) or (status == 1 and
                                   not any(failed_case(c) for c in cases)):
        print("Bail out! pytest exited with status %d" % status)


if __name__ == "__main__":
    main()
