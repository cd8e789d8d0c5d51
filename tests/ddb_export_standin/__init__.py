"""A DynamoDB export stand-in for tests: `python -m tests.ddb_export_standin`.

It forwards DynamoDB's JSON protocol to moto and answers ExportTableToPointInTime, DescribeExport and
ListExports itself, writing the export layout AWS documents into S3. See README.md beside this file.
"""
