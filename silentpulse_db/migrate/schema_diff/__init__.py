"""Drift: does the live schema match what the migration files build at its version?"""
