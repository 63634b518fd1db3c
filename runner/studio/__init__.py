"""TODO studio"""
